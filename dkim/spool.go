package dkim

import (
	"fmt"
	"io"
	"os"
)

// spool keeps the bytes written to it, the first limit in memory and the rest
// in a temporary file, and writes them out again once. The file is unlinked
// as soon as it is made: a crash leaves no message behind, and Close frees it.
type spool struct {
	dir   string
	limit int
	mem   []byte
	file  *os.File
}

func (s *spool) Write(p []byte) (int, error) {
	if s.file == nil && len(s.mem)+len(p) <= s.limit {
		if need := len(s.mem) + len(p); need > cap(s.mem) {
			grown := make([]byte, len(s.mem), min(max(2*cap(s.mem), need), s.limit))
			copy(grown, s.mem)
			s.mem = grown
		}
		s.mem = append(s.mem, p...)
		return len(p), nil
	}
	if s.file == nil {
		f, err := os.CreateTemp(s.dir, "relayguard-dkim-*")
		if err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return 0, fmt.Errorf("spool: %w", err)
		}
		s.file = f
		if _, err := f.Write(s.mem); err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
		s.mem = nil
	}
	n, err := s.file.Write(p)
	if err != nil {
		return n, fmt.Errorf("spool: %w", err)
	}
	return n, nil
}

// writeTo writes everything written so far to w.
func (s *spool) writeTo(w io.Writer) error {
	if s.file == nil {
		if _, err := w.Write(s.mem); err != nil {
			return fmt.Errorf("dkim: %w", err)
		}
		return nil
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("dkim: spool: %w", err)
	}
	if _, err := io.Copy(w, s.file); err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	return nil
}

// Close frees the file, if any.
func (s *spool) Close() error {
	s.mem = nil
	if s.file == nil {
		return nil
	}
	return s.file.Close()
}
