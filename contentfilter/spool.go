package contentfilter

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Spool holds one message: in memory up to a threshold, in a temporary
// file past it, so that a large message is never held whole in memory.
// Readers get independent streams over it, for the scanners, the signer
// and the next hop in turn.
//
// In memory the message is a list of fixed-size chunks, kept between
// messages: growing it copies nothing, and a message in memory costs no
// garbage. A file is written through a buffer, not a system call per line.
// A reader that is still reading when the spool is closed (the signer,
// when the next hop failed first) gets an error, never bytes of another
// message.
type Spool struct {
	mu        sync.Mutex
	chunks    []*chunk // all full but the last
	file      *os.File
	fw        *bufio.Writer // buffers the writes to file
	err       error         // the first write error of the file
	size      int64
	threshold int64
	dir       string
	closed    bool
}

// chunkSize is the unit of a spool's memory.
const chunkSize = 16 << 10

type chunk [chunkSize]byte

var chunks = sync.Pool{New: func() any { return new(chunk) }}

var errSpoolClosed = errors.New("spool: read after the message was closed")

func newSpool(dir string, threshold int64) *Spool {
	return &Spool{dir: dir, threshold: threshold}
}

// Write appends to the spool, moving it to a file when it grows past the
// threshold. It is called by the session alone, before any Reader, and
// takes no lock: the readers and Close do.
func (s *Spool) Write(p []byte) (int, error) {
	if s.closed {
		return 0, errSpoolClosed
	}
	if s.file == nil && s.size+int64(len(p)) > s.threshold {
		if err := s.toFile(); err != nil {
			return 0, err
		}
	}
	if s.file != nil {
		n, err := s.fw.Write(p)
		s.size += int64(n)
		if err != nil && s.err == nil {
			s.err = err
		}
		return n, err
	}
	n := len(p)
	for len(p) > 0 {
		off := int(s.size % chunkSize)
		if off == 0 {
			s.chunks = append(s.chunks, chunks.Get().(*chunk))
		}
		c := copy(s.chunks[len(s.chunks)-1][off:], p)
		p = p[c:]
		s.size += int64(c)
	}
	return n, nil
}

// toFile moves the message to an unlinked temporary file.
func (s *Spool) toFile() error {
	f, err := os.CreateTemp(s.dir, "relayguard-msg-*")
	if err != nil {
		return err
	}
	os.Remove(f.Name()) // unlinked: gone with the process, whatever happens
	fw := bufio.NewWriterSize(f, 64<<10)
	for i, c := range s.chunks {
		n := int64(chunkSize)
		if i == len(s.chunks)-1 {
			n = s.size - int64(i)*chunkSize
		}
		if _, err := fw.Write(c[:n]); err != nil {
			f.Close()
			return err
		}
	}
	s.release()
	s.file, s.fw = f, fw
	return nil
}

// release gives the chunks back.
func (s *Spool) release() {
	for i, c := range s.chunks {
		chunks.Put(c)
		s.chunks[i] = nil
	}
	s.chunks = nil
}

// Size is the message's length in bytes.
func (s *Spool) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// OnDisk reports whether the message went to a file.
func (s *Spool) OnDisk() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.file != nil
}

// Reader returns a new stream of the whole message, which is also an
// io.Seeker (the signer reads it twice). The message must be complete.
func (s *Spool) Reader() io.Reader {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file != nil {
		if s.err == nil {
			s.err = s.fw.Flush()
		}
		if s.err != nil {
			return errorReader{fmt.Errorf("spool: %w", s.err)}
		}
		return io.NewSectionReader(s.file, 0, s.size)
	}
	return &memReader{s: s, size: s.size}
}

// Close releases the memory or the file.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.release()
	if s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file, s.fw = nil, nil
	return err
}

// memReader reads a spool in memory.
type memReader struct {
	s         *Spool
	off, size int64
}

func (r *memReader) Read(p []byte) (int, error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.s.closed {
		return 0, errSpoolClosed
	}
	if r.off >= r.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.off < r.size {
		c := r.s.chunks[r.off/chunkSize]
		start := int(r.off % chunkSize)
		end := min(chunkSize, start+int(r.size-r.off))
		k := copy(p[n:], c[start:end])
		n += k
		r.off += int64(k)
	}
	return n, nil
}

func (r *memReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, errors.New("spool: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("spool: negative position")
	}
	r.off = offset
	return offset, nil
}

// errorReader fails every read.
type errorReader struct{ err error }

func (e errorReader) Read([]byte) (int, error) { return 0, e.err }

var errTooBig = errors.New("message exceeds the size limit")
