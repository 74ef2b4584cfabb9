// Server-sent events read with fetch(): EventSource cannot send an Authorization header, and the API
// authenticates every route with one. Parses the text/event-stream format (WHATWG HTML, "Server-sent
// events"): `field: value` lines, `:` comments (keep-alives), a blank line ends an event.

// Yields {event, data} with `data` parsed as JSON; comments and events without data are skipped.
export async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data = [];
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // A chunk may end between the \r and \n of one line break: keep that \r for the next round.
      const held = buffer.endsWith("\r") ? 1 : 0;
      const lines = buffer.slice(0, buffer.length - held).split(/\r\n|\r|\n/);
      buffer = lines.pop() + buffer.slice(buffer.length - held); // an unfinished line waits too
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
          event = "message";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
    }
  } finally {
    await reader.cancel().catch(() => {}); // a consumer that stops early closes the connection
  }
}
