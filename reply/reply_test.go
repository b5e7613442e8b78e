package reply

import "testing"

func TestParse(t *testing.T) {
	check := func(in, wantErr string) {
		t.Helper()
		_, err := Parse(in)
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("%q: %v", in, err)
		case wantErr != "" && (err == nil || err.Error() != wantErr):
			t.Errorf("%q: error %v, want %q", in, err, wantErr)
		}
	}
	check("550 5.1.0 {id} invalid domain", "")
	check("421 4.7.0 {id} Connection refused from {ip}. Too many authorization failures from this IP, try again later.", "")
	check("250 2.0.0 ok", `reply "250 2.0.0 ok": must start with a 4xx or 5xx code, a space, an enhanced status code and a text`)
	check("550 invalid", `reply "550 invalid": "invalid" is not an enhanced status code such as 5.1.0 (RFC 3463)`)
	check("550 x.1.0 text", `reply "550 x.1.0 text": "x.1.0" is not an enhanced status code such as 5.1.0 (RFC 3463)`)
	check("451 5.1.0 text", `reply "451 5.1.0 text": code 451 is temporary (4xx) but enhanced code 5.1.0 is not`)
	check("550 5.1.0 ", `reply "550 5.1.0 ": the text is empty`)
	check("550 5.1.0 {id", `reply "550 5.1.0 {id": unclosed {`)
	check("550 5.1.0 {} x", `reply "550 5.1.0 {} x": empty {} placeholder`)
	check("550 5.1.0 a\nb", `reply "550 5.1.0 a\nb": must be one line`)
}

func TestRender(t *testing.T) {
	check := func(tmpl string, vars []string, want string) {
		t.Helper()
		if got := MustParse(tmpl).Render(vars...); got != want {
			t.Errorf("%q: got %q, want %q", tmpl, got, want)
		}
	}
	check("550 5.1.0 <{sender}> sender rejected GeoIP {domain}:{ip}:{country}",
		[]string{"sender", "jan@mailtest.cz", "domain", "mailtest.cz", "ip", "112.67.35.229", "country", "CN"},
		"550 5.1.0 <jan@mailtest.cz> sender rejected GeoIP mailtest.cz:112.67.35.229:CN")
	check("530 5.7.0 {id} authentication required", []string{"id", "piWs1j0010jifNx01iWsdh"}, "530 5.7.0 piWs1j0010jifNx01iWsdh authentication required")
	check("550 5.1.0 <{sender}> x", []string{"sender", "a\r\nb@c"}, "550 5.1.0 <a  b@c> x")
	check("550 5.1.0 [{missing}]", nil, "550 5.1.0 []")
	if got := MustParse("421 4.7.0 {id} refused from {ip}.").Text("id", "X", "ip", "192.0.2.1"); got != "X refused from 192.0.2.1." {
		t.Errorf("Text: %q", got)
	}
}

func TestCheck(t *testing.T) {
	tm := MustParse("550 5.1.0 {id} {sender}")
	if err := tm.Check("id", "sender"); err != nil {
		t.Error(err)
	}
	if err := tm.Check("id"); err == nil {
		t.Error("{sender} accepted where only {id} is known")
	}
	if !MustParse("451 4.4.3 x").Temporary() || MustParse("554 5.7.1 x").Temporary() {
		t.Error("Temporary wrong")
	}
}
