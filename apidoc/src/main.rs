//! `apidoc > openapi.json`: prints the gateway's merged OpenAPI document (what
//! `GET /api/openapi.json` serves and `docs/openapi.json` holds). Exits 1, saying why, if the
//! services' documents do not merge.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match apidoc::document() {
        Ok(json) => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(json.as_bytes()).and_then(|()| out.flush()) {
                eprintln!("apidoc: writing the document: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("apidoc: {e}");
            ExitCode::FAILURE
        }
    }
}
