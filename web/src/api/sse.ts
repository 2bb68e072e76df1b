// Server-sent events read with fetch: the queue's status stream needs the `Authorization` header,
// which EventSource cannot send. Only `data:` lines matter to this app (the stream sends no event
// names or ids); a frame's data lines are joined with "\n" as the SSE spec says.

/**
 * Calls `onData` with each frame's data until the stream ends (resolves) or fails or is aborted
 * (rejects). Comment lines (`:`), other fields and frames without data are skipped.
 */
export async function readEventStream(body: ReadableStream<Uint8Array>, onData: (data: string) => void): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let data: string[] = [];
  const line = (text: string) => {
    if (text === '') {
      if (data.length) onData(data.join('\n'));
      data = [];
    } else if (text.startsWith('data:')) {
      data.push(text.slice(text.startsWith('data: ') ? 6 : 5));
    }
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    // A frame ends at a blank line; lines end with \n, \r\n or \r. A chunk ending in \r waits
    // for the next one, which may start with the \n of the same line end.
    const complete = buffer.endsWith('\r') ? buffer.slice(0, -1) : buffer;
    const lines = complete.split(/\r\n|\r|\n/);
    buffer = (lines.pop() ?? '') + buffer.slice(complete.length);
    lines.forEach(line);
  }
  if (buffer) line(buffer);
  line('');
}
