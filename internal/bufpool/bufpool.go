// Package bufpool keeps bufio readers and writers of one size between uses:
// allocated for each connection or message, the large ones were most of the
// content filter's garbage.
package bufpool

import (
	"bufio"
	"io"
	"sync"
)

// Readers keeps bufio.Readers of one size.
type Readers struct{ p sync.Pool }

// NewReaders returns a pool of readers of size bytes.
func NewReaders(size int) *Readers {
	return &Readers{sync.Pool{New: func() any { return bufio.NewReaderSize(nil, size) }}}
}

// Get returns a reader of r.
func (p *Readers) Get(r io.Reader) *bufio.Reader {
	b := p.p.Get().(*bufio.Reader)
	b.Reset(r)
	return b
}

// Put takes back a reader that is not used again.
func (p *Readers) Put(b *bufio.Reader) {
	b.Reset(nil)
	p.p.Put(b)
}

// Writers keeps bufio.Writers of one size.
type Writers struct{ p sync.Pool }

// NewWriters returns a pool of writers of size bytes.
func NewWriters(size int) *Writers {
	return &Writers{sync.Pool{New: func() any { return bufio.NewWriterSize(nil, size) }}}
}

// Get returns a writer to w.
func (p *Writers) Get(w io.Writer) *bufio.Writer {
	b := p.p.Get().(*bufio.Writer)
	b.Reset(w)
	return b
}

// Put takes back a writer that is not used again.
func (p *Writers) Put(b *bufio.Writer) {
	b.Reset(nil)
	p.p.Put(b)
}
