package attachments

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Extension returns the extension that decides what a file is, the way
// Windows decides it when the recipient opens the attachment: the text after
// the last dot of the last path element, once what Windows and mail
// clients drop from the end of a name is gone. It returns "" for a name
// without extension.
//
//	"a.pdf.exe"  → "exe"  (the last extension decides)
//	"a.exe.pdf"  → "pdf"
//	"x.EXE. . "  → "exe"  (Windows strips trailing dots and spaces)
//	"a.exe\x00"  → "exe"  (and so do C strings)
//	"a.exe\u202e" → "exe" (an invisible format character at the end)
//	"dir.exe/f"  → ""     (clients save the last path element only)
//	"noext"      → ""
//
// The result is folded to lower case, and letters that Windows upper-cases
// to ASCII fold to that ASCII letter: "a.ſcr" is "scr", because Windows
// compares extensions upper-cased and "ſ" (U+017F) upper-cases to "S".
func Extension(name string) string {
	name = strings.TrimRightFunc(name, strippedAtEnd)
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return ""
	}
	return fold(name[i+1:])
}

// strippedAtEnd reports whether r is dropped from the end of a file name
// before its extension is read: dots and spaces (Windows drops them), NUL and
// other control characters, invisible format characters such as U+200B and
// U+202E, and path separators.
func strippedAtEnd(r rune) bool {
	return r == '.' || r == '/' || r == '\\' || unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
}

func fold(ext string) string {
	ascii := true
	for i := 0; i < len(ext); i++ {
		if ext[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(ext)
	}
	return strings.Map(foldRune, ext)
}

func foldRune(r rune) rune {
	if u := unicode.ToUpper(r); u < utf8.RuneSelf {
		return unicode.ToLower(u)
	}
	return unicode.ToLower(r)
}
