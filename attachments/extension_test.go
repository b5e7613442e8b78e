package attachments

import "testing"

func TestExtension(t *testing.T) {
	check := func(name, want string) {
		t.Helper()
		if got := Extension(name); got != want {
			t.Errorf("Extension(%q) = %q, want %q", name, got, want)
		}
	}
	check("a.exe", "exe")
	check("A.EXE", "exe")
	check("a.pdf.exe", "exe")
	check("a.exe.pdf", "pdf")
	check("x.EXE. . ", "exe")
	check("a.exe.", "exe")
	check("a.exe  ", "exe")
	check("a.exe\x00", "exe")
	check("a.exe\t\r\n", "exe")
	check("a.exe\u200b", "exe")          // zero-width space
	check("invoice\u202efdp.exe", "exe") // right-to-left override: shown as "invoiceexe.pdf"
	check("a.exe\u202e", "exe")
	check("a.exe\u00a0", "exe") // no-break space
	check(`C:\Users\jan\a.exe`, "exe")
	check("dir.exe/file", "")
	check("a.exe/", "exe")
	check("a.ſcr", "scr") // U+017F upper-cases to S
	check("a.ınf", "inf") // U+0131 upper-cases to I
	check(".exe", "exe")
	check("noext", "")
	check("", "")
	check("...", "")
	check("a.", "")
	check("a.tar.gz", "gz")
	check("a.e xe", "e xe")
	check("účet.EXE", "exe")
}
