package policyd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// postfixRCPT is a request as Postfix 3.7.11 sent it at RCPT (LAB.md §3a).
const postfixRCPT = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n" +
	"client_address=127.0.0.1\nclient_name=localhost\nclient_port=54526\nreverse_client_name=localhost\n" +
	"server_address=127.0.0.1\nserver_port=25587\nhelo_name=client.example.test\nsender=user@example.test\n" +
	"recipient=rcpt1@example.net\nrecipient_count=0\nqueue_id=\ninstance=3e0f.6b030908.4ec22.0\nsize=0\n" +
	"etrn_domain=\nstress=\nsasl_method=PLAIN\nsasl_username=user@example.test\nsasl_sender=\n" +
	"ccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\nencryption_protocol=\n" +
	"encryption_cipher=\nencryption_keysize=0\npolicy_context=submission\n\n"

// Requests decoded one after the other into one Request, in other orders
// and with other values, each read as it was sent.
func TestDecodeReuse(t *testing.T) {
	seq := []string{
		"a=1\nb=2\nc=3\n\n",
		"a=1\nb=22\nc=3\n\n",    // b changes
		"c=3\na=1\n\n",          // other order, fewer
		"a=1\nb=2\nc=3\nd=\n\n", // more again
		"a=\nb=2\nc=3\nd=4\n\n",
	}
	d := NewDecoder(strings.NewReader(strings.Join(seq, "")), DefaultLimits)
	var req Request
	for _, want := range seq {
		if err := d.Decode(&req); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		req.WriteTo(&got)
		if got.String() != want {
			t.Errorf("decoded %q, want %q", got.String(), want)
		}
	}
}

// A repeated attribute is refused whatever came before it on the
// connection, e.g. a longer request whose names are still in the buffers.
func TestDecodeRepeatedAfterOthers(t *testing.T) {
	for _, seq := range [][]string{
		{"x=1\ny=2\nz=3\n\n", "y=1\n\n", "y=1\ny=2\n\n"},
		{"x=1\ny=2\n\n", "x=1\ny=2\nx=3\n\n"},
		{"x=1\ny=2\n\n", "x=1\nx=2\n\n"},
	} {
		d := NewDecoder(strings.NewReader(strings.Join(seq, "")), DefaultLimits)
		var req Request
		for i, r := range seq {
			err := d.Decode(&req)
			last := i == len(seq)-1
			if last && (err == nil || !strings.Contains(err.Error(), "repeated")) {
				t.Errorf("%q: %v, want a repeated attribute", seq, err)
			}
			if !last && err != nil {
				t.Fatalf("%q: request %q: %v", seq, r, err)
			}
		}
	}
}

// BenchmarkDecode reads a session's requests as Postfix sends them, on one
// connection.
func BenchmarkDecode(b *testing.B) {
	reqs := strings.Repeat(postfixRCPT, 64)
	var req Request
	b.ReportAllocs()
	for b.Loop() {
		d := NewDecoder(strings.NewReader(reqs), DefaultLimits)
		for range 64 {
			if err := d.Decode(&req); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func TestDecode(t *testing.T) {
	small := Limits{MaxLine: 40, MaxRequest: 100, MaxAttributes: 3}
	check := func(name, input string, limits Limits, wantErr string, want map[string]string) {
		t.Helper()
		d := NewDecoder(strings.NewReader(input), limits)
		var req Request
		err := d.Decode(&req)
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("%s: unexpected error %v", name, err)
			return
		case wantErr != "":
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("%s: error %v, want one containing %q", name, err, wantErr)
			}
			return
		}
		for k, v := range want {
			if got := req.Get(k); got != v || !req.Has(k) {
				t.Errorf("%s: %s = %q, want %q", name, k, got, v)
			}
		}
		if req.Len() != len(want) && want != nil && name != "postfix 3.7 RCPT" {
			t.Errorf("%s: %d attributes, want %d", name, req.Len(), len(want))
		}
	}
	check("postfix 3.7 RCPT", postfixRCPT, DefaultLimits, "", map[string]string{
		"protocol_state": "RCPT", "recipient": "rcpt1@example.net", "queue_id": "", "sasl_username": "user@example.test",
	})
	check("value with =", "a=b=c\n\n", small, "", map[string]string{"a": "b=c"})
	check("CRLF tolerated", "a=1\r\nb=2\r\n\r\n", small, "", map[string]string{"a": "1", "b": "2"})
	check("empty value", "a=\n\n", small, "", map[string]string{"a": ""})
	check("no =", "junk\n\n", small, "not name=value", nil)
	check("empty name", "=x\n\n", small, "not name=value", nil)
	check("repeated", "a=1\na=2\n\n", small, "repeated", nil)
	check("long line", "a="+strings.Repeat("x", 50)+"\n\n", small, "line longer than 40", nil)
	check("long line no newline", "a="+strings.Repeat("x", 5000), small, "line longer than 40", nil)
	check("too many attributes", "a=1\nb=2\nc=3\nd=4\n\n", small, "more than 3 attributes", nil)
	check("long request", strings.Repeat("a=1234567890123456789012345678901\n", 1)+"b=1234567890123456789012345678901\nc=1234567890123456789012345678901\n\n", small, "request longer than 100", nil)
	check("empty request", "\n", small, "empty request", nil)
	check("eof inside request", "a=1\n", small, "closed inside a request", nil)
	check("bare CR", "a=1\r\r\n\n", small, "carriage return", nil)
	check("eof inside line", "a=1", small, "closed inside a line", nil)
}

func TestDecodeSequence(t *testing.T) {
	d := NewDecoder(strings.NewReader(postfixRCPT+postfixRCPT+"request=x\n\n"), DefaultLimits)
	var req Request
	for i := range 3 {
		if err := d.Decode(&req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if req.Len() != 1 || req.Get("request") != "x" || req.Has("recipient") {
		t.Errorf("third request kept attributes of the second: %d attributes", req.Len())
	}
	if err := d.Decode(&req); !errors.Is(err, io.EOF) {
		t.Errorf("after the last request: %v, want io.EOF", err)
	}
}

func TestRoundTrip(t *testing.T) {
	var req Request
	req.Set("request", "smtpd_access_policy")
	req.Set("sender", "a@b.c")
	req.Set("sender", "d@e.f")
	var b bytes.Buffer
	req.WriteTo(&b)
	if b.String() != "request=smtpd_access_policy\nsender=d@e.f\n\n" {
		t.Errorf("wire form %q", b.String())
	}
	var w bytes.Buffer
	bw := bufio.NewWriter(&w)
	if err := WriteAction(bw, "550 5.1.0 x"); err != nil || w.String() != "action=550 5.1.0 x\n\n" {
		t.Errorf("reply %q, %v", w.String(), err)
	}
}

// FuzzDecode feeds arbitrary bytes to the decoder: it must never panic, never
// return a request beyond its limits, and what it accepts must survive a
// round trip through the wire form.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(postfixRCPT))
	f.Add([]byte("a=b\n\nc=d\r\n\r\n"))
	f.Add([]byte("=\n\n"))
	limits := Limits{MaxLine: 64, MaxRequest: 512, MaxAttributes: 8}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := NewDecoder(bytes.NewReader(data), limits)
		var req Request
		for range 10 {
			err := d.Decode(&req)
			if err != nil {
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.EOF) {
					t.Fatalf("unexpected error type: %v", err)
				}
				return
			}
			if req.Len() == 0 || req.Len() > limits.MaxAttributes {
				t.Fatalf("%d attributes", req.Len())
			}
			var b bytes.Buffer
			req.WriteTo(&b)
			var again Request
			if err := NewDecoder(&b, limits).Decode(&again); err != nil {
				t.Fatalf("round trip of an accepted request failed: %v", err)
			}
			for i, n := range req.names {
				if again.Get(n) != req.values[i] {
					t.Fatalf("round trip changed %s", n)
				}
			}
		}
	})
}
