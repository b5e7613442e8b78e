// Package milter is the narrow server side of the Sendmail milter protocol
// (version 6, as Postfix's smtpd speaks it; MILTER_README) that relayguard
// needs: it follows an SMTP session stage by stage and, at each stage, may
// answer an SMTP reply that Postfix sends to the client verbatim.
//
// Why relayguard speaks it at all: Postfix wraps a policy service's reply
// ("550 5.1.0 text" becomes "550 5.1.0 <addr>: Sender address rejected:
// text"), while a milter's reply reaches the client as it is. The customer
// must see the documented lines, so policyd decides through the policy
// protocol and speaks through this one.
//
// The protocol: every packet is a 32-bit big-endian length, a command byte
// and the data. Postfix opens one connection per SMTP session, negotiates
// (SMFIC_OPTNEG), then sends macros (SMFIC_MACRO, no reply) before each event
// (connect, HELO, MAIL, RCPT, DATA, end of message) and expects one reply per
// event: continue, or a reply code with its text. This package asks for no
// headers and no body, and asks, during the negotiation, for the macros it
// needs, so Postfix needs no macro settings. It implements no message
// modification. There is no maintained milter server among the project's
// dependencies, so this part is written here.
package milter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"relayguard/internal/conns"
)

// Commands from the MTA (libmilter's mfdef.h).
const (
	cmdAbort   = 'A'
	cmdBody    = 'B'
	cmdConnect = 'C'
	cmdMacro   = 'D'
	cmdEOB     = 'E'
	cmdHelo    = 'H'
	cmdQuitNC  = 'K'
	cmdHeader  = 'L'
	cmdMail    = 'M'
	cmdEOH     = 'N'
	cmdOptneg  = 'O'
	cmdQuit    = 'Q'
	cmdRcpt    = 'R'
	cmdData    = 'T'
	cmdUnknown = 'U'
)

// Replies to the MTA.
const (
	replyContinue  = 'c'
	replyReplyCode = 'y'
)

// Protocol flags: the events this server does not want.
const (
	noBody    = 0x10
	noHeaders = 0x20
	noEOH     = 0x40
	noUnknown = 0x100
)

// Macro stages of SMFIR_SETSYMLIST in the negotiation reply.
const (
	symConnect = 0
	symMail    = 2
	symEOM     = 5
)

const version = 6

// maxPacket bounds one packet; Postfix's are a few hundred bytes here (no body).
const maxPacket = 64 * 1024

// Stage names, as the policy protocol's protocol_state spells them.
const (
	Connect      = "CONNECT"
	Helo         = "EHLO"
	Mail         = "MAIL"
	Rcpt         = "RCPT"
	Data         = "DATA"
	EndOfMessage = "END-OF-MESSAGE"
)

// Session is what the milter learned of one SMTP session.
type Session struct {
	Client     netip.AddrPort // the SMTP client; invalid for an unknown family
	Server     netip.AddrPort // Postfix's address and port ({daemon_addr}, {daemon_port})
	HeloName   string
	Sender     string // of the current transaction
	Recipient  string // of the current RCPT event
	macros     map[string]string
	closeHooks []func()
}

// Macro returns a macro Postfix sent, "" when it did not.
func (s *Session) Macro(name string) string { return s.macros[name] }

// OnClose registers f to run when the session ends (QUIT, a new session on
// the same connection, or the connection closing).
func (s *Session) OnClose(f func()) { s.closeHooks = append(s.closeHooks, f) }

// Handler is called at each stage and returns the SMTP reply to send
// ("550 5.1.0 text"), or "" to let the session continue.
type Handler func(s *Session, stage string) string

// Server serves milter connections.
type Server struct {
	Handler Handler
	Timeout time.Duration // a connection silent for this long is closed
	Log     *slog.Logger

	conns conns.Group
}

// Serve accepts connections on l until Close.
func (srv *Server) Serve(l net.Listener) error {
	return srv.conns.Serve(l, func(c net.Conn) {
		defer c.Close()
		err := srv.serve(c)
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			srv.Log.Warn("milter connection failed", "peer", c.RemoteAddr().String(), "error", err)
		}
	})
}

// Close stops the listeners and the connections and waits for them.
func (srv *Server) Close() {
	now, cancel := context.WithCancel(context.Background())
	cancel() // no connection is left to finish
	srv.conns.Shutdown(now)
}

// ErrProtocol marks a packet this server cannot accept.
var ErrProtocol = errors.New("milter protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// readPacket reads one packet: its command and data.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxPacket {
		return 0, nil, protoErr("packet length %d", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return buf[0], buf[1:], nil
}

func writePacket(w io.Writer, cmd byte, data []byte) error {
	buf := make([]byte, 5+len(data))
	binary.BigEndian.PutUint32(buf, uint32(1+len(data)))
	buf[4] = cmd
	copy(buf[5:], data)
	_, err := w.Write(buf)
	return err
}

// cstrings splits NUL-terminated strings.
func cstrings(b []byte) []string {
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

// negotiate answers SMFIC_OPTNEG: protocol version 6, no modifications, no
// headers or body, and the macros the handler may read.
func negotiate(data []byte) ([]byte, error) {
	if len(data) < 12 {
		return nil, protoErr("short negotiation")
	}
	mtaVersion := binary.BigEndian.Uint32(data[0:])
	offered := binary.BigEndian.Uint32(data[8:])
	if mtaVersion < 2 {
		return nil, protoErr("MTA speaks milter protocol version %d", mtaVersion)
	}
	want := uint32(noBody | noHeaders | noEOH | noUnknown)
	var out []byte
	out = binary.BigEndian.AppendUint32(out, min(mtaVersion, version))
	out = binary.BigEndian.AppendUint32(out, 0)
	out = binary.BigEndian.AppendUint32(out, want&offered)
	for _, m := range []struct {
		stage  uint32
		macros string
	}{
		{symConnect, "{daemon_addr} {daemon_port}"},
		{symMail, "i {auth_authen}"},
		{symEOM, "i"},
	} {
		out = binary.BigEndian.AppendUint32(out, m.stage)
		out = append(out, m.macros...)
		out = append(out, 0)
	}
	return out, nil
}

// stripAngle removes the <> around an envelope address.
func stripAngle(s string) string {
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		return s[1 : len(s)-1]
	}
	return s
}

// parseAddr accepts Postfix's address forms, "IPv6:..." included.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimPrefix(s, "IPv6:"))
	return a.Unmap(), err
}

func (srv *Server) serve(c net.Conn) error {
	r := bufio.NewReader(c)
	s := &Session{macros: map[string]string{}}
	defer s.end()
	for {
		if srv.Timeout > 0 {
			c.SetDeadline(time.Now().Add(srv.Timeout))
		}
		cmd, data, err := readPacket(r)
		if err != nil {
			return err
		}
		stage := ""
		switch cmd {
		case cmdOptneg:
			out, err := negotiate(data)
			if err != nil {
				return err
			}
			if err := writePacket(c, cmdOptneg, out); err != nil {
				return err
			}
			continue
		case cmdMacro:
			if len(data) > 0 {
				kv := cstrings(data[1:])
				for i := 0; i+1 < len(kv); i += 2 {
					s.macros[strings.Trim(kv[i], "{}")] = kv[i+1]
				}
			}
			continue
		case cmdConnect:
			if err := s.connect(data); err != nil {
				return err
			}
			stage = Connect
		case cmdHelo:
			if h := cstrings(data); len(h) > 0 {
				s.HeloName = h[0]
			}
			stage = Helo
		case cmdMail:
			args := cstrings(data)
			if len(args) == 0 {
				return protoErr("MAIL without an address")
			}
			s.Sender, s.Recipient = stripAngle(args[0]), ""
			stage = Mail
		case cmdRcpt:
			args := cstrings(data)
			if len(args) == 0 {
				return protoErr("RCPT without an address")
			}
			s.Recipient = stripAngle(args[0])
			stage = Rcpt
		case cmdData:
			stage = Data
		case cmdEOB:
			stage = EndOfMessage
		case cmdAbort:
			s.Sender, s.Recipient = "", ""
			continue // no reply
		case cmdQuit:
			return nil
		case cmdQuitNC: // the session ended; the connection serves the next one
			s.end()
			*s = Session{macros: map[string]string{}}
			continue
		case cmdHeader, cmdEOH, cmdBody, cmdUnknown:
			stage = "" // not asked for; answered continue if sent anyway
		default:
			return protoErr("unknown command %q", cmd)
		}
		reply := ""
		if stage != "" {
			reply = srv.Handler(s, stage)
		}
		if reply == "" {
			err = writePacket(c, replyContinue, nil)
		} else {
			err = writePacket(c, replyReplyCode, append([]byte(reply), 0))
		}
		if err != nil {
			return err
		}
	}
}

// end runs the OnClose hooks once.
func (s *Session) end() {
	for _, f := range s.closeHooks {
		f()
	}
	s.closeHooks = nil
}

// connect parses SMFIC_CONNECT: host name, family, port, address.
func (s *Session) connect(data []byte) error {
	i := bytes.IndexByte(data, 0)
	if i < 0 || i+1 >= len(data) {
		return protoErr("short connect packet")
	}
	family, rest := data[i+1], data[i+2:]
	if family == '4' || family == '6' {
		if len(rest) < 3 {
			return protoErr("short connect packet")
		}
		port := binary.BigEndian.Uint16(rest)
		a, err := parseAddr(string(bytes.TrimSuffix(rest[2:], []byte{0})))
		if err != nil {
			return protoErr("connect address: %v", err)
		}
		s.Client = netip.AddrPortFrom(a, port)
	}
	if a, err := parseAddr(s.macros["daemon_addr"]); err == nil {
		if p, err := strconv.ParseUint(s.macros["daemon_port"], 10, 16); err == nil {
			s.Server = netip.AddrPortFrom(a, uint16(p))
		}
	}
	return nil
}
