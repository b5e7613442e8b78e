package main

import "relayguard/internal/bufpool"

// The buffers of the connections, kept between messages in the load
// generator, the sink and the pass-through alike, as the filter keeps its
// own: allocated per message, they would make the garbage collector of
// this process, and of the pass-through, work for each message.
var (
	smallReaders = bufpool.NewReaders(4 << 10)
	bigReaders   = bufpool.NewReaders(64 << 10)
	smallWriters = bufpool.NewWriters(4 << 10)
	bigWriters   = bufpool.NewWriters(64 << 10)
)
