package main

import (
	"bufio"
	"io"
	"sync"
)

// The buffers of the connections, kept between messages in the load
// generator, the sink and the pass-through alike, as the filter keeps its
// own: allocated per message, they would make the garbage collector of
// this process, and of the pass-through, work for each message.
var (
	readers = map[int]*sync.Pool{}
	writers = map[int]*sync.Pool{}
)

func init() {
	for _, size := range []int{4 << 10, 64 << 10} {
		readers[size] = &sync.Pool{New: func() any { return bufio.NewReaderSize(nil, size) }}
		writers[size] = &sync.Pool{New: func() any { return bufio.NewWriterSize(nil, size) }}
	}
}

func getReader(r io.Reader, size int) *bufio.Reader {
	b := readers[size].Get().(*bufio.Reader)
	b.Reset(r)
	return b
}

func putReader(b *bufio.Reader) {
	size := b.Size()
	b.Reset(nil)
	readers[size].Put(b)
}

func getWriter(w io.Writer, size int) *bufio.Writer {
	b := writers[size].Get().(*bufio.Writer)
	b.Reset(w)
	return b
}

func putWriter(b *bufio.Writer) {
	size := b.Size()
	b.Reset(nil)
	writers[size].Put(b)
}
