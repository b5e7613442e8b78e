package testmail

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"relayguard/attachments"
)

func TestMessage(t *testing.T) {
	in, err := attachments.NewInspector(attachments.DefaultExtensions)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{50_000, 1_000_000} {
		m := New(size, 1)
		id := ID("run1", 42)
		if len(id) != IDWidth || id != "run1-00000000042" {
			t.Errorf("ID %q: want %d characters", id, IDWidth)
		}
		msg := m.Bytes(id)
		if len(msg) != m.Size || m.Size > size || m.Size < size-100 {
			t.Errorf("size %d: %d bytes, Size %d", size, len(msg), m.Size)
		}
		if !bytes.HasSuffix(msg, []byte("\r\n"+LastLine(id)+"\r\n")) || !bytes.Contains(msg, []byte("\r\n"+IDHeader+": "+id+"\r\n")) {
			t.Errorf("size %d: the id is not in the header and the last line", size)
		}
		if bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) {
			t.Errorf("size %d: a bare LF", size)
		}
		var data bytes.Buffer
		if err := m.WriteData(bufio.NewWriter(&data), id); err != nil {
			t.Fatal(err)
		}
		if want := string(msg) + ".\r\n"; data.String() != want {
			t.Errorf("size %d: WriteData differs from Bytes", size)
		}
		res, err := in.Inspect(bytes.NewReader(msg))
		if err != nil || len(res.Banned) > 0 || len(res.Problems) > 0 || strings.Join(res.Names, ",") != "vyuctovani-2026-03.pdf" {
			t.Errorf("size %d: inspected as %+v, %v", size, res, err)
		}
	}
}

func TestStuff(t *testing.T) {
	if got := string(stuff([]byte("a\r\n.b\r\n..\r\n"))); got != "a\r\n..b\r\n...\r\n" {
		t.Errorf("stuff: %q", got)
	}
	if got := unstuff([]byte("a\r\n..b\r\n...\r\n")); got != "a\r\n.b\r\n..\r\n" {
		t.Errorf("unstuff: %q", got)
	}
}
