"""Federation: the server, the client, the round loop, the task they share, typed events.

Built on the wire protocol (fl.wire), the learning code (fl.learning) and the data layer (fl.data)."""
