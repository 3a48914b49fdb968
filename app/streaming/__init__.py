"""Streaming sentiment with no memory on the server: the client carries the state.

An RNN reads a text one token at a time and remembers it only through its recurrent state, so
a text can be sent in pieces as it is typed or transcribed: each call reads the new piece from
the state the previous call handed back, and returns the prediction so far and a new state.
Nothing is kept between calls, so any replica (any worker) can serve the next piece.

The state is opaque to clients; it carries

- the recurrent state: every layer's hidden state, and the LSTM's cell state, as raw floats in
  the dtype the model runs in (`app.inference.predictor`: float32 for a one-direction LSTM by
  default, else float64), so a stream reads on exactly where it stopped however many pieces it
  is cut into (a service computing streams in the other dtype refuses the state with a 409 rather
  than convert it);
- the text not yet read: the characters after the last whitespace, which may be half a word,
  half an emoticon or half an emoji sequence (see `app.streaming.text`);
- the stream's position (characters received) and the number of tokens read;
- a format version byte, the first 8 bytes of the checkpoint's sha256 (a state from another
  model version is refused with a clear 409, never silently misread), and the time it was
  issued (states expire `APP_STREAM_STATE_TTL_S` after the call that issued them);
- an HMAC-SHA256 over all of that, keyed by the secret and the full checkpoint sha256, so a
  tampered, truncated or foreign state is refused instead of being read as hidden states.

A state is a capability, not a secret: whoever holds one can continue (or fork) that stream,
and it reveals the model's hidden state for the text so far, nothing more.

One job per module, each importing only those above it in this list:

- `errors`: `StreamError`, why a piece or a state is refused (status, code, type, field);
- `text`: cutting the text, where a piece's tokens become final, and why that is exact;
- `codec`: the state's binary format, its signature and range checks; the signing key
  (`stream_secret`: `APP_STREAM_SECRET`, or a random key shared by the server's workers);
- `engine`: `StreamEngine`, which checks and cuts a piece (`prepare`) and reads it with the
  model (`compute`), and the longest stream;
- `service`: `StreamService`, the engine behind its own bounded queue on the model's thread;
- `websocket`: the `/stream/ws` protocol (its rules, the Origin check, the connection count,
  the close codes and the reasons they are sent for), apart from the route that speaks it.

Nothing here knows HTTP or the wire schemas: the routes (`app.api.routes.stream`) validate
requests, map `StreamError` to the common error shape, and shape the responses.
"""
