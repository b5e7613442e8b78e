package contentfilter

import (
	"bytes"
	"errors"
	"io"
	"os"
)

// Spool holds one message: in memory up to a threshold, in a temporary
// file past it, so that a large message is never held whole in memory.
// Readers get independent streams over it, for the scanners, the signer
// and the next hop in turn.
type Spool struct {
	mem       bytes.Buffer
	file      *os.File
	size      int64
	threshold int64
	dir       string
}

func newSpool(dir string, threshold int64) *Spool {
	return &Spool{dir: dir, threshold: threshold}
}

// Write appends to the spool, moving it to a file when it grows past the threshold.
func (s *Spool) Write(p []byte) (int, error) {
	if s.file == nil && int64(s.mem.Len()+len(p)) > s.threshold {
		f, err := os.CreateTemp(s.dir, "relayguard-msg-*")
		if err != nil {
			return 0, err
		}
		os.Remove(f.Name()) // unlinked: gone with the process, whatever happens
		if _, err := f.Write(s.mem.Bytes()); err != nil {
			f.Close()
			return 0, err
		}
		s.file = f
		s.mem = bytes.Buffer{}
	}
	var n int
	var err error
	if s.file != nil {
		n, err = s.file.Write(p)
	} else {
		n, err = s.mem.Write(p)
	}
	s.size += int64(n)
	return n, err
}

// Size is the message's length in bytes.
func (s *Spool) Size() int64 { return s.size }

// OnDisk reports whether the message went to a file.
func (s *Spool) OnDisk() bool { return s.file != nil }

// Reader returns a new stream of the whole message.
func (s *Spool) Reader() io.Reader {
	if s.file != nil {
		return io.NewSectionReader(s.file, 0, s.size)
	}
	return bytes.NewReader(s.mem.Bytes())
}

// Close releases the file, if any.
func (s *Spool) Close() error {
	if s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file = nil
	return err
}

var errTooBig = errors.New("message exceeds the size limit")
