// `/wallet`: the balance, the top-up form and the history. Reached from a payment that came up
// short as `/wallet?need=<KRW>&back=/reservations/<id>`: the form is filled in with what is
// missing and, once topped up, the page leads back to the reservation.
import { useRef, useState } from 'preact/hooks';
import { useRoute } from 'preact-iso';
import { api, type Schemas } from '../api/client';
import { type ApiProblem, asProblem, must } from '../api/problems';
import { ProblemAlert } from '../ui/alert';
import { money, whenShort } from '../ui/format';
import { PageHeading } from '../ui/heading';
import { Loading } from '../ui/loading';
import { SessionRequired } from '../ui/session-required';
import { useLoad } from '../ui/use-load';

type Entry = Schemas['LedgerEntry'];

/** One charge is 1 to 1,000,000 KRW (API.md, payment-api). */
const MAX_CHARGE = 1_000_000;

const KIND_WORDS: Record<Entry['kind'], string> = { CHARGE: 'Top-up', PAYMENT: 'Payment', REFUND: 'Refund' };

export function WalletPage() {
  return (
    <SessionRequired title="Wallet">
      <Wallet />
    </SessionRequired>
  );
}

function Wallet() {
  const { query } = useRoute();
  const need = Number(query.need) > 0 ? Math.min(Math.ceil(Number(query.need)), MAX_CHARGE) : null;
  // Only a reservation page is a place to go back to.
  const back = /^\/reservations\/\d+$/.test(query.back ?? '') ? query.back : null;
  const wallet = useLoad((signal) => must(api.GET('/api/wallet', { signal })), []);
  const [historyRound, setHistoryRound] = useState(0);
  const [added, setAdded] = useState<{ amount: number; balance: number } | null>(null);

  return (
    <section>
      <PageHeading title="Wallet" />
      {wallet.problem && <ProblemAlert problem={wallet.problem} onRetry={wallet.reload} />}
      <h2>Balance</h2>
      {wallet.data ? <p class="balance">{money(wallet.data.balance)}</p> : !wallet.problem && <Loading what="the balance" />}
      {need && !added && <p class="notice">Your seats need {money(need)} more than your wallet holds.</p>}
      <TopUp
        initial={need}
        onAdded={(amount, balance) => {
          setAdded({ amount, balance });
          if (wallet.data) wallet.set({ ...wallet.data, balance });
          setHistoryRound((n) => n + 1);
        }}
      />
      {added && (
        <div role="status" class="notice notice-ok">
          <p>
            Added {money(added.amount)}. Your balance is now {money(added.balance)}.
          </p>
          {back && (
            <p>
              <a href={back}>Back to your reservation to pay</a>
            </p>
          )}
        </div>
      )}
      {back && !added && (
        <p>
          <a href={back}>Back to your reservation</a>
        </p>
      )}
      <History round={historyRound} />
    </section>
  );
}

function TopUp({ initial, onAdded }: { initial: number | null; onAdded: (amount: number, balance: number) => void }) {
  const [amount, setAmount] = useState(initial ? String(initial) : '');
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<ApiProblem | null>(null);
  const [invalid, setInvalid] = useState('');
  // The charge's Idempotency-Key, kept for a retry of the same amount after no clear answer,
  // so a timeout never charges twice; a new one after any answer.
  const key = useRef<{ amount: number; key: string } | null>(null);

  async function submit(e: Event) {
    e.preventDefault();
    const value = Number(amount);
    if (!Number.isInteger(value) || value < 1 || value > MAX_CHARGE) {
      setInvalid(`Enter a whole number of won from 1 to ${MAX_CHARGE.toLocaleString('en')}.`);
      return;
    }
    setInvalid('');
    setProblem(null);
    setBusy(true);
    if (key.current?.amount !== value) key.current = { amount: value, key: crypto.randomUUID() };
    try {
      const charge = await must(
        api.POST('/api/wallet/charges', { body: { amount: value }, headers: { 'Idempotency-Key': key.current.key } }),
      );
      key.current = null;
      setAmount('');
      onAdded(charge.amount, charge.balance);
    } catch (err) {
      const p = asProblem(err);
      if (p.status > 0 && p.status < 500 && p.code !== 'IDEMPOTENCY_KEY_IN_USE') key.current = null;
      setProblem(p);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form onSubmit={submit} class="stack" noValidate>
      <h2>Top up</h2>
      <div class="field">
        <label htmlFor="topup-amount">Amount to add (won)</label>
        <input
          id="topup-amount"
          name="amount"
          type="text"
          inputMode="numeric"
          autoComplete="off"
          value={amount}
          onInput={(e) => setAmount(e.currentTarget.value.replace(/[^0-9]/g, ''))}
          aria-describedby="topup-hint"
          aria-invalid={invalid ? true : undefined}
          aria-errormessage={invalid ? 'topup-error' : undefined}
          required
        />
        <p id="topup-hint" class="hint">
          From ₩1 to {money(MAX_CHARGE)} at a time.
        </p>
        {invalid && (
          <p id="topup-error" role="alert" class="field-error">
            {invalid}
          </p>
        )}
      </div>
      {problem && <ProblemAlert problem={problem} />}
      <button type="submit" class="primary" disabled={busy}>
        {busy ? 'Adding…' : 'Add money'}
      </button>
    </form>
  );
}

function History({ round }: { round: number }) {
  const [older, setOlder] = useState<Entry[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const first = useLoad(
    async (signal) => {
      const page = await must(api.GET('/api/wallet/transactions', { params: { query: { limit: 20 } }, signal }));
      setOlder([]);
      setCursor(page.next_cursor ?? null);
      return page.items;
    },
    [round],
  );
  const [problem, setProblem] = useState<ApiProblem | null>(null);

  async function more() {
    if (!cursor) return;
    try {
      const page = await must(api.GET('/api/wallet/transactions', { params: { query: { limit: 20, cursor } } }));
      setOlder([...older, ...page.items]);
      setCursor(page.next_cursor ?? null);
      setProblem(null);
    } catch (e) {
      setProblem(asProblem(e));
    }
  }

  const entries = [...(first.data ?? []), ...older];
  return (
    <section aria-labelledby="history-title">
      <h2 id="history-title">History</h2>
      {first.problem && <ProblemAlert problem={first.problem} onRetry={first.reload} />}
      {!first.data && !first.problem && <Loading what="the history" />}
      {first.data && entries.length === 0 && <p>Nothing yet: top up to buy tickets.</p>}
      {entries.length > 0 && (
        <ul class="ledger">
          {entries.map((e) => (
            <li key={e.id}>
              <span class="ledger-kind">{KIND_WORDS[e.kind]}</span>
              <span class="ledger-amount">
                {e.kind === 'PAYMENT' ? '−' : '+'}
                {money(Math.abs(e.amount))}
              </span>
              <span class="muted">
                balance {money(e.balance_after)}, <time dateTime={e.created_at}>{whenShort(e.created_at)}</time>
              </span>
            </li>
          ))}
        </ul>
      )}
      {problem && <ProblemAlert problem={problem} onRetry={more} />}
      {cursor && (
        <button type="button" onClick={more}>
          Show older entries
        </button>
      )}
    </section>
  );
}
