//! The pre-queue's verifiable lottery (DESIGN §10, API.md): a secret 32-byte seed whose
//! SHA-256 (the commitment) is published when the sale's opening is set; at the draw the
//! pre-queued tokens are ordered by ascending HMAC-SHA256(key = seed, message = token), and
//! the seed is published, so anyone can recompute the order and check it was fixed before.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A fresh secret seed, from the operating system's generator.
pub fn new_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    seed
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Bytes of an even-length hex string; `None` for anything else.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

/// The published commitment: lowercase hex SHA-256 of the seed.
pub fn commitment(seed: &[u8]) -> String {
    to_hex(&Sha256::digest(seed))
}

/// A token's draw key: lowercase hex HMAC-SHA256(key = seed, message = token's UTF-8 bytes).
pub fn draw_key(seed: &[u8], token: &str) -> String {
    // HMAC's own key rule (RFC 2104): a key longer than the 64-byte block is hashed first,
    // then it is zero-padded to the block; done here so no fallible constructor is needed.
    let mut block = [0u8; 64];
    if seed.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(seed));
    } else {
        block[..seed.len()].copy_from_slice(seed);
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    mac.update(token.as_bytes());
    to_hex(&mac.finalize().into_bytes())
}

/// The tokens in the draw's order: ascending draw key (ties, which SHA-256 makes
/// impossible in practice, by token).
pub fn order<'a>(seed: &[u8], tokens: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut keyed: Vec<(String, &str)> = tokens.map(|t| (draw_key(seed, t), t)).collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        let seed = new_seed();
        let hex = to_hex(&seed);
        assert_eq!(hex.len(), 64);
        assert_eq!(hex, hex.to_lowercase());
        assert_eq!(from_hex(&hex).as_deref(), Some(&seed[..]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }

    /// RFC 4231 test case 2 and the SHA-256 of "abc" (FIPS 180-2): the primitives are the
    /// standard ones, so anyone's implementation recomputes the same order.
    #[test]
    fn the_primitives_match_the_published_test_vectors() {
        assert_eq!(
            draw_key(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            commitment(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_key_longer_than_a_block_is_hashed_as_hmac_says() {
        // RFC 4231 test case 6: a 131-byte key.
        assert_eq!(
            draw_key(
                &[0xaa; 131],
                "Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn the_order_is_ascending_draw_keys_whatever_the_input_order() {
        let seed = [7u8; 32];
        let tokens = ["1.a", "1.b", "1.c", "1.d", "1.e"];
        let forward = order(&seed, tokens.iter().copied());
        let backward = order(&seed, tokens.iter().rev().copied());
        assert_eq!(forward, backward);
        let keys: Vec<String> = forward.iter().map(|t| draw_key(&seed, t)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(
            order(&[8u8; 32], tokens.iter().copied()),
            forward,
            "another seed, another order"
        );
    }
}
