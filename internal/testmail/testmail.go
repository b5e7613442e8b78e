// Package testmail makes the messages that the benchmarks send: what a
// customer of a hosting provider sends most, a short letter in text and
// HTML with a PDF attached (multipart/mixed around a multipart/alternative
// and an application/pdf part in base64), of a given size. Each message
// carries an id twice, in an X-Bench-Id header field and in the last line
// of the MIME epilogue, so that a receiving end can tell which message
// arrived and that it arrived whole.
package testmail

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strings"
)

// Sender and recipient of every message, in its header and envelope.
const (
	SenderDomain = "example.cz"
	Sender       = "jan.novak@" + SenderDomain
	Recipient    = "eva.svobodova@example.net"
)

// IDHeader is the header field that carries a message's id.
const IDHeader = "X-Bench-Id"

// Message is a message template: every message made from it is the same
// but for its id.
type Message struct {
	head1, head2 []byte // the header section before and after the id, dot-stuffed
	body         []byte // dot-stuffed
	Size         int    // of each message, CRLF line endings, without the stuffing
}

// IDWidth is the length of every id, so that every message of a template
// has the same size.
const IDWidth = 16

// New makes a template of about size bytes (at least about 5 KB: the letter
// itself), its PDF's bytes drawn from seed.
func New(size int, seed uint64) *Message {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	var text, html strings.Builder
	for text.Len() < 1500 {
		text.WriteString("Dobrý den,\r\nv příloze posílám vyúčtování za minulý měsíc a prosím o potvrzení přijetí.\r\n")
		html.WriteString("<p>Dobrý den,<br>v příloze posílám <b>vyúčtování</b> za minulý měsíc a prosím o potvrzení přijetí.</p>\r\n")
	}
	text.WriteString("S pozdravem\r\nJan Novák\r\n")
	m := &Message{
		head1: []byte("Return-Path: <" + Sender + ">\r\n" +
			"From: Jan Novák <" + Sender + ">\r\n" +
			"To: Eva Svobodová <" + Recipient + ">\r\n" +
			"Subject: =?UTF-8?Q?Vy=C3=BA=C4=8Dtov=C3=A1n=C3=AD_za_b=C5=99ezen?=\r\n" +
			"Date: Tue, 07 Apr 2026 09:14:27 +0200\r\n" +
			"Message-ID: <"),
		head2: []byte("@" + SenderDomain + ">\r\n" +
			"MIME-Version: 1.0\r\n" +
			"User-Agent: Mozilla Thunderbird\r\n" +
			"Content-Type: multipart/mixed; boundary=\"------------mixed0A1B2C3D\"\r\n"),
	}
	var b strings.Builder
	b.WriteString("\r\nThis is a multi-part message in MIME format.\r\n" +
		"--------------mixed0A1B2C3D\r\n" +
		"Content-Type: multipart/alternative; boundary=\"------------alt4E5F6A7B\"\r\n\r\n" +
		"--------------alt4E5F6A7B\r\n" +
		"Content-Type: text/plain; charset=UTF-8; format=flowed\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n\r\n" + text.String() + "\r\n" +
		"--------------alt4E5F6A7B\r\n" +
		"Content-Type: text/html; charset=UTF-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n\r\n<html><body>\r\n" + html.String() + "</body></html>\r\n\r\n" +
		"--------------alt4E5F6A7B--\r\n\r\n" +
		"--------------mixed0A1B2C3D\r\n" +
		"Content-Type: application/pdf; name=\"vyuctovani-2026-03.pdf\"\r\n" +
		"Content-Disposition: attachment; filename=\"vyuctovani-2026-03.pdf\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n")
	const closing = "--------------mixed0A1B2C3D--\r\n"
	fixed := len(m.head1) + IDWidth + len(m.head2) + len(IDHeader) + 2 + IDWidth + 2 + b.Len() + len(closing) + len(lastLine) + IDWidth + 2
	// base64 in lines of 76 characters and CRLF: 78 bytes for 57 of PDF.
	pdf := make([]byte, max(0, (size-fixed)/78*57))
	for i := range pdf {
		pdf[i] = byte(rng.Uint32())
	}
	copy(pdf, "%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
	enc := base64.StdEncoding.EncodeToString(pdf)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	if enc != "" {
		b.WriteString(enc + "\r\n")
	}
	b.WriteString(closing)
	m.body = []byte(b.String())
	m.Size = len(m.head1) + IDWidth + len(m.head2) + len(IDHeader) + 2 + IDWidth + 2 + len(m.body) + len(lastLine) + IDWidth + 2
	m.head1, m.head2, m.body = stuff(m.head1), stuff(m.head2), stuff(m.body)
	return m
}

// stuff dot-stuffs SMTP data (RFC 5321 §4.5.2); the templates' lines do not
// start with a dot, but a changed template must not break the protocol.
func stuff(b []byte) []byte {
	if !bytes.HasPrefix(b, []byte(".")) && !bytes.Contains(b, []byte("\n.")) {
		return b
	}
	var out []byte
	for line := range bytes.Lines(b) {
		if line[0] == '.' {
			out = append(out, '.')
		}
		out = append(out, line...)
	}
	return out
}

// ID is the id of message n of a run: the run's name and the number,
// IDWidth characters in all for a name of up to 10.
func ID(run string, n uint64) string {
	return fmt.Sprintf("%s-%0*d", run, max(1, IDWidth-len(run)-1), n)
}

// WriteData writes the message with id id as SMTP data (dot-stuffed, with
// the final "."), and flushes w.
func (m *Message) WriteData(w *bufio.Writer, id string) error {
	w.Write(m.head1)
	w.WriteString(id)
	w.Write(m.head2)
	w.WriteString(IDHeader + ": ")
	w.WriteString(id)
	w.WriteString("\r\n")
	w.Write(m.body)
	w.WriteString(lastLine)
	w.WriteString(id)
	w.WriteString("\r\n.\r\n")
	return w.Flush()
}

// Bytes returns the message with id id as it is sent, without the
// stuffing and the final ".".
func (m *Message) Bytes(id string) []byte {
	var b bytes.Buffer
	b.Grow(m.Size)
	b.WriteString(unstuff(m.head1))
	b.WriteString(id)
	b.WriteString(unstuff(m.head2))
	b.WriteString(IDHeader + ": " + id + "\r\n")
	b.WriteString(unstuff(m.body))
	b.WriteString(LastLine(id) + "\r\n")
	return b.Bytes()
}

// lastLine starts the last line of every message; the id follows.
const lastLine = "end of message "

// LastLine is the last line of message id, without its CRLF.
func LastLine(id string) string { return lastLine + id }

func unstuff(b []byte) string {
	var out []byte
	for line := range bytes.Lines(b) {
		out = append(out, bytes.TrimPrefix(line, []byte("."))...)
	}
	return string(out)
}
