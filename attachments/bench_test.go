package attachments

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/jhillyerd/enmime/v2"
)

// pdfMessage is a message as customers send them: text and HTML
// alternatives and a PDF of raw bytes, about size bytes in all.
func pdfMessage(size int) []byte {
	return []byte(crlf(pdfMessageLF(size, "b1")))
}

func pdfMessageLF(size int, boundary string) string {
	var text, html strings.Builder
	for text.Len() < 1500 {
		text.WriteString("Dobrý den, v příloze posílám vyúčtování za minulý měsíc. S pozdravem Jan Novák\n")
		html.WriteString("<p>Dobrý den, v příloze posílám <b>vyúčtování</b> za minulý měsíc.</p>\n")
	}
	msg := func(pdf int) string {
		return header + "Content-Type: multipart/mixed; boundary=\"" + boundary + "\"\n\n" + multipart(boundary,
			"Content-Type: multipart/alternative; boundary=\"alt-"+boundary+"\"\n\n"+multipart("alt-"+boundary,
				"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"+text.String(),
				"Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n<html><body>\n"+html.String()+"</body></html>\n",
			),
			"Content-Type: application/pdf; name=\"vyuctovani.pdf\"\nContent-Disposition: attachment; filename=\"vyuctovani.pdf\"\nContent-Transfer-Encoding: base64\n\n"+binary(pdf),
		)
	}
	overhead := len(crlf(msg(0)))
	return msg((size - overhead) * 3 / 4 * 76 / 78)
}

// forwardedMessage is a message that forwards, as an attachment, a
// message with a PDF, about size bytes in all.
func forwardedMessage(size int) []byte {
	return []byte(mixed(textPart, "Content-Type: message/rfc822\nContent-Disposition: attachment; filename=\"fwd.eml\"\n\n"+pdfMessageLF(size, "fwd")))
}

func benchmark(b *testing.B, msg []byte, parse func(io.Reader) error) {
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if err := parse(bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}

func inspectOK(r io.Reader) error {
	res, err := inspector.Inspect(r)
	if err == nil && (len(res.Banned) > 0 || len(res.Problems) > 0) {
		return fmt.Errorf("unexpected result %+v", res)
	}
	return err
}

// BenchmarkInspect is the filter's cost on a 50 KB message with a PDF.
func BenchmarkInspect(b *testing.B) {
	benchmark(b, pdfMessage(50<<10), inspectOK)
}

// BenchmarkReadEnvelope is enmime with its defaults on the same message:
// every part decoded, charsets detected and converted, HTML down-converted.
func BenchmarkReadEnvelope(b *testing.B) {
	benchmark(b, pdfMessage(50<<10), func(r io.Reader) error {
		_, err := enmime.ReadEnvelope(r)
		return err
	})
}

// BenchmarkReadPartsRaw is enmime with the inspector's options on the
// whole message, without skeleton: the options alone.
func BenchmarkReadPartsRaw(b *testing.B) {
	benchmark(b, pdfMessage(50<<10), func(r io.Reader) error {
		_, err := parser.ReadParts(r)
		return err
	})
}

// BenchmarkInspectLarge shows the memory for 20 MB messages: B/op is all
// that was allocated, an upper bound of what was held at once.
func BenchmarkInspectLarge(b *testing.B) {
	b.Run("pdf", func(b *testing.B) { benchmark(b, pdfMessage(20<<20), inspectOK) })
	b.Run("forwarded", func(b *testing.B) { benchmark(b, forwardedMessage(20<<20), inspectOK) })
	// The one body held: an attached message in base64.
	b.Run("forwarded-base64", func(b *testing.B) {
		msg := mixed(textPart, "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"+base64Lines(string(pdfMessage(15<<20))))
		benchmark(b, []byte(msg), inspectOK)
	})
}
