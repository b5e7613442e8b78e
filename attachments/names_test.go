package attachments

import (
	"slices"
	"testing"
)

func TestFileNames(t *testing.T) {
	check := func(value string, want ...string) {
		t.Helper()
		if got := fileNames(value); !slices.Equal(got, want) {
			t.Errorf("fileNames(%q) = %q, want %q", value, got, want)
		}
	}
	check(`attachment; filename="a.exe"`, "a.exe")
	check(`attachment; filename=a.exe`, "a.exe")
	check(`attachment; FILENAME = "a.exe" ; size=10`, "a.exe")
	check(`application/pdf; name="a.pdf"`, "a.pdf")
	check(`attachment; filename="a.pdf"; name="b.exe"`, "a.pdf", "b.exe")
	check(`attachment; filename="a;b.exe"`, "a;b.exe")
	check(`attachment; filename="say \"hi\".exe"`, `say "hi".exe`)
	check(`attachment; x="filename=a.exe"; filename="b.pdf"`, "b.pdf")
	check(`attachment; filename=my file.exe`, "my file.exe")
	check(`attachment filename=a.exe`, "a.exe")            // missing ";"
	check(`attachment; filename="a.pdf".exe`, "a.pdf.exe") // quote closed too early
	check(`attachment; filename="a.exe`, "a.exe")          // quote never closed
	check(`attachment; filename=`)
	check(`attachment`)
	check(``)

	// RFC 2231.
	check(`attachment; filename*=UTF-8''%C3%BA%C4%8Det.exe`, "účet.exe")
	check(`attachment; filename*=utf-8'cs'%C3%BA%C4%8Det.exe`, "účet.exe")
	check(`attachment; filename*=iso-8859-2''%FA%E8et.exe`, "účet.exe")
	check(`attachment; filename*=windows-1250''%FA%E8et.exe`, "účet.exe")
	check(`attachment; filename*=x-unknown''a%2Eexe`, "a.exe")
	check(`attachment; filename*=UTF-8''a%ZZ.exe`, "a%ZZ.exe")
	check(`attachment; filename*=a.exe`, "a.exe") // no charset at all
	check(`attachment; filename*0="a"; filename*1=".exe"`, "a.exe")
	check(`attachment; filename*1=".exe"; filename*0="a"`, "a.exe")
	check(`attachment; filename*0*=UTF-8''%C3%BA%C4%8Det; filename*1=".exe"`, "účet.exe")
	check(`attachment; filename*0*=iso-8859-2''%FA%E8et; filename*1*=%2Eexe`, "účet.exe")
	check(`attachment; filename*0="a"; filename*2=".exe"`, "a.exe") // a gap
	check(`attachment; filename="a.pdf"; filename*=UTF-8''a.exe`, "a.pdf", "a.exe")
	check(`attachment; filename*x="a.exe"`)

	// RFC 2047.
	check(`application/octet-stream; name="=?UTF-8?B?w7rEjWV0LmV4ZQ==?="`, "účet.exe")
	check(`application/octet-stream; name="=?UTF-8?Q?=C3=BA=C4=8Det.exe?="`, "účet.exe")
	check(`application/octet-stream; name="=?utf-8?B?w7rEjWV0?= =?utf-8?B?LmV4ZQ==?="`, "účet.exe")
	check(`application/octet-stream; name="=?iso-8859-2?Q?=FA=E8et.exe?="`, "účet.exe")
	check(`application/octet-stream; name="=?x-unknown?Q?a.exe?="`, "a.exe")
	check(`attachment; filename*=UTF-8''a.exe%00.pdf`, "a.exe\x00.pdf", "a.exe")
	check(`application/octet-stream; =?UTF-8?B?bmFtZT0iZXZpbC5leGUi?=`, "evil.exe") // the whole name="evil.exe"
}
