package contentfilter

import "relayguard/internal/bufpool"

// The filter's buffers are kept between messages: allocated for each, the
// 64 KiB ones were half of the filter's garbage.
var (
	// bigReaders read the message: from Postfix, and from the spool to the
	// next hop.
	bigReaders = bufpool.NewReaders(64 << 10)
	// bigWriters write the message to the next hop. Through the next hop's
	// 4 KiB command buffer, a 50 KB message took 13 writes to the socket,
	// and the filter 28 system calls of writing per message where a relay
	// needs 15 (strace -c under bench/filterbench).
	bigWriters = bufpool.NewWriters(64 << 10)
	// lineReaders and lineWriters hold command and reply lines: of the next
	// hop's connections and of the replies to Postfix.
	lineReaders = bufpool.NewReaders(maxLine)
	lineWriters = bufpool.NewWriters(maxLine)
)
