package contentfilter

import (
	"bufio"
	"io"
	"sync"
)

// The filter's buffers are kept between messages: allocated for each, the
// 64 KiB ones were half of the filter's garbage.
var (
	// bigReaders read the message: from Postfix, and from the spool to the
	// next hop.
	bigReaders = newReaderPool(64 << 10)
	// bigWriters write the message to the next hop. Through the next hop's
	// 4 KiB command buffer, a 50 KB message took 13 writes to the socket,
	// and the filter 28 system calls of writing per message where a relay
	// needs 15 (strace -c under bench/filterbench).
	bigWriters = newWriterPool(64 << 10)
	// lineReaders and lineWriters hold command and reply lines: of the next
	// hop's connections and of the replies to Postfix.
	lineReaders = newReaderPool(maxLine)
	lineWriters = newWriterPool(maxLine)
)

// readerPool keeps bufio.Readers of one size.
type readerPool struct{ p sync.Pool }

func newReaderPool(size int) *readerPool {
	return &readerPool{sync.Pool{New: func() any { return bufio.NewReaderSize(nil, size) }}}
}

// get returns a reader of r.
func (p *readerPool) get(r io.Reader) *bufio.Reader {
	b := p.p.Get().(*bufio.Reader)
	b.Reset(r)
	return b
}

// put takes back a reader that is not used again.
func (p *readerPool) put(b *bufio.Reader) {
	b.Reset(nil)
	p.p.Put(b)
}

// writerPool keeps bufio.Writers of one size.
type writerPool struct{ p sync.Pool }

func newWriterPool(size int) *writerPool {
	return &writerPool{sync.Pool{New: func() any { return bufio.NewWriterSize(nil, size) }}}
}

// get returns a writer to w.
func (p *writerPool) get(w io.Writer) *bufio.Writer {
	b := p.p.Get().(*bufio.Writer)
	b.Reset(w)
	return b
}

// put takes back a writer that is not used again.
func (p *writerPool) put(b *bufio.Writer) {
	b.Reset(nil)
	p.p.Put(b)
}
