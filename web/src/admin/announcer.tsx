// The sale view's one live region. The figures refresh every poll and are never announced;
// only a change of the line's state (paused, open, sold out) or of the live figures' health is
// said, politely, once.
import { useEffect, useRef, useState } from 'preact/hooks';
import type { LiveSale, WaitingRoom } from './use-live-sale';

type RoomState = WaitingRoom['state'];

function stateMessage(now: RoomState): string {
  switch (now) {
    case 'PAUSED':
      return 'The line is paused: nobody is admitted until it is resumed.';
    case 'SOLD_OUT':
      return 'Sold out: nothing is left to buy, and the fans still waiting have been told.';
    case 'OPEN':
      return 'The line is open: fans are admitted again.';
  }
}

export function SaleAnnouncer({ live }: { live: LiveSale }) {
  const [message, setMessage] = useState('');
  const seen = useRef<{ state: RoomState; failing: boolean } | null>(null);
  const state = live.room?.state;
  const failing = live.problem !== null;

  useEffect(() => {
    if (!state) return;
    const before = seen.current;
    seen.current = { state, failing };
    // The first figures are the starting point, not a change.
    if (!before) return;
    if (state !== before.state) setMessage(stateMessage(state));
    else if (failing !== before.failing) {
      setMessage(failing ? 'The live figures stopped updating; retrying.' : 'The live figures are updating again.');
    }
  }, [state, failing]);

  return (
    <p class="admin-announcement" role="status">
      {message}
    </p>
  );
}
