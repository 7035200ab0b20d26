package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/nfc"
	"github.com/spf13/cobra"
)

// readerFlags choose the NFC readers of `cagnotte node`.
type readerFlags struct {
	pcsc     []string
	sim      []string
	simCards string
}

func (f *readerFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.pcsc, "reader", nil, `PC/SC NFC reader to watch, by name or name prefix as "cagnotte nfc readers" lists it, or "auto" for the first one (repeatable; needs pcscd)`)
	cmd.Flags().StringArrayVar(&f.sim, "sim-reader", nil, "simulated NFC reader to add, by name (repeatable): cards are tapped on it with POST /api/v1/taps/simulate")
	cmd.Flags().StringVar(&f.simCards, "sim-cards", "", "directory keeping the simulated readers' cards (default: in memory)")
}

// readers opens the readers the flags name. The caller hands them to the
// node, which closes them.
func (f *readerFlags) readers(log *slog.Logger) ([]nfc.Reader, *nfc.SimCards, error) {
	var out []nfc.Reader
	for _, name := range f.pcsc {
		if name == "auto" {
			name = ""
		}
		r, err := nfc.OpenPCSC(nfc.PCSCConfig{Reader: name, Logger: log})
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, nil, fmt.Errorf("NFC reader %q: %w", name, err)
		}
		out = append(out, r)
	}
	for _, name := range f.sim {
		out = append(out, nfc.NewSimReader(name))
	}
	var cards *nfc.SimCards
	if len(f.sim) > 0 {
		var err error
		if cards, err = nfc.NewSimCards(f.simCards, nfc.NTAG215); err != nil {
			return nil, nil, err
		}
	}
	return out, cards, nil
}

// cardSource is where `cagnotte nfc read|format` find their card: a PC/SC
// reader, or a simulated card kept in a file (--sim).
type cardSource struct {
	reader  string
	sim     string
	simType string
	timeout time.Duration
}

func (s *cardSource) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.reader, "reader", "", "PC/SC reader name or prefix (default: the first reader)")
	cmd.Flags().StringVar(&s.sim, "sim", "", "use a simulated card kept in this file instead of a reader (created if absent: see --sim-type)")
	cmd.Flags().StringVar(&s.simType, "sim-type", "NTAG215", "type of a new simulated card: NTAG213, NTAG215 or NTAG216")
	cmd.Flags().DurationVar(&s.timeout, "timeout", 30*time.Second, "how long to wait for a card")
}

// card waits for a card and returns it with a function that releases it.
func (s *cardSource) card(ctx context.Context, g *globals, uid string) (nfc.Card, func(), error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var r nfc.Reader
	if s.sim != "" {
		tag, err := s.simTag(uid)
		if err != nil {
			return nil, nil, err
		}
		sr := nfc.NewSimReader("simulated")
		sr.Present(tag)
		r = sr
	} else {
		pr, err := nfc.OpenPCSC(nfc.PCSCConfig{Reader: s.reader, Logger: g.logger()})
		if err != nil {
			return nil, nil, err
		}
		r = pr
		fmt.Fprintf(g.stderr, "present a card to the reader (waiting %s)…\n", s.timeout)
	}
	c, err := r.Wait(ctx)
	if err != nil {
		r.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, nil, fmt.Errorf("no card presented within %s", s.timeout)
		}
		return nil, nil, err
	}
	return c, func() { c.Close(); r.Close() }, nil
}

func (s *cardSource) simTag(uid string) (*nfc.SimTag, error) {
	if _, err := os.Stat(s.sim); err == nil {
		return nfc.LoadSimTag(s.sim)
	}
	t, ok := nfc.TypeByName(s.simType)
	if !ok {
		return nil, fmt.Errorf("--sim-type %q: not a simulated card type (NTAG213, NTAG215, NTAG216)", s.simType)
	}
	if uid == "" { // a random 7-byte NXP UID
		b := make([]byte, 7)
		rand.Read(b)
		b[0] = 0x04
		uid = strings.ToUpper(hex.EncodeToString(b))
	}
	tag, err := nfc.NewSimTag(crdt.CardID(uid), t)
	if err != nil {
		return nil, err
	}
	return tag, tag.SaveTo(s.sim)
}

func newNFCCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nfc",
		Short: "NFC readers and cards: list readers, read a card, format a new card",
		Long: `The first commands to run when installing a reader (docs/operations.md,
"Installing a reader"): 'cagnotte nfc readers' lists the readers pcscd sees,
'cagnotte nfc read' prints the tapped card's UID, type, memory layout, link
and stamps, 'cagnotte nfc format' prepares a new card: the card holder's
link (an NDEF URI record a phone opens) and empty stamp slots. A node that
runs holds its readers: stop it first (or they answer "in use").`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "readers",
		Short: "List the NFC readers pcscd sees",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			names, err := nfc.ListReaders(cmd.Context())
			if err != nil {
				return err
			}
			if len(names) == 0 {
				fmt.Fprintln(g.stdout, "no reader: plug one in (see docs/operations.md, \"Installing a reader\")")
				return nil
			}
			for _, n := range names {
				kind := "CCID (PC/SC part 3)"
				if nfc.KindOf(n) == nfc.ACR122U {
					kind = "ACR122U (direct transmit)"
				}
				fmt.Fprintf(g.stdout, "%s\t%s\n", n, kind)
			}
			return nil
		},
	})

	var rs cardSource
	read := &cobra.Command{
		Use:   "read",
		Short: "Wait for a card and print its UID, type, memory layout, link and stamps",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := rs.card(cmd.Context(), g, "")
			if err != nil {
				return err
			}
			defer done()
			return printCard(cmd.Context(), g.stdout, c)
		},
	}
	rs.register(read)
	cmd.AddCommand(read)

	var fs cardSource
	var link, api, token, base string
	format := &cobra.Command{
		Use:   "format",
		Short: "Prepare a new card: the holder's link and empty stamp slots",
		Long: `Prepare a new card: write the card holder's page link as an NDEF URI record
(NTAG215/216: a phone tapped on the card opens it) and empty stamp slots.
The link is --link, or is made from the node at --api: it asks the node for
the card's holder token (the card must be known: top it up first) and links
to --base (the node's public address, default --api) + /c/<token>.
Without either, the card gets an empty NDEF message. Existing stamps are
erased: format new cards only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := fs.card(cmd.Context(), g, "")
			if err != nil {
				return err
			}
			defer done()
			uri := link
			if uri == "" && api != "" {
				tok, err := holderToken(cmd.Context(), demoVenueJSON{API: strings.TrimRight(api, "/"), Token: token}, string(c.UID()))
				if err != nil {
					return fmt.Errorf("holder token of card %s from %s: %w", c.UID(), api, err)
				}
				if base == "" {
					base = api
				}
				uri = strings.TrimRight(base, "/") + "/c/" + tok
			}
			if err := nfc.Format(cmd.Context(), c, uri); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "card %s (%s) formatted", c.UID(), c.Type())
			if uri != "" {
				fmt.Fprintf(g.stdout, " with the link %s", uri)
			}
			fmt.Fprintln(g.stdout)
			return printCard(cmd.Context(), g.stdout, c)
		},
	}
	fs.register(format)
	format.Flags().StringVar(&link, "link", "", "the link to write (default: made from --api)")
	format.Flags().StringVar(&api, "api", "", "the node's API address, to get the card holder's token (e.g. http://127.0.0.1:8080)")
	format.Flags().StringVar(&token, "token", os.Getenv("CAGNOTTE_TOKEN"), "a staff token of that node (default $CAGNOTTE_TOKEN)")
	format.Flags().StringVar(&base, "base", "", "the public address card holders open the link at (default --api)")
	cmd.AddCommand(format)
	return cmd
}

// printCard prints what a card holds.
func printCard(ctx context.Context, w io.Writer, c nfc.Card) error {
	fmt.Fprintf(w, "UID:    %s\ntype:   %s\n", c.UID(), c.Type())
	if !c.Type().Known() {
		fmt.Fprintln(w, "memory: unknown card type: only its UID is used (no stamp)")
		return nil
	}
	d, err := nfc.ReadCard(ctx, c)
	if err != nil {
		return err
	}
	l := d.Layout
	fmt.Fprintf(w, "memory: %d user bytes, pages %d-%d\n", c.Type().UserBytes(), c.Type().UserStart, c.Type().UserEnd-1)
	if l.NDEFEnd > l.NDEFStart {
		fmt.Fprintf(w, "NDEF:   pages %d-%d (%d bytes), capability container % X\n", l.NDEFStart, l.NDEFEnd-1, 4*(l.NDEFEnd-l.NDEFStart), d.CC)
	}
	if d.URI != "" {
		fmt.Fprintf(w, "link:   %s\n", d.URI)
	} else {
		fmt.Fprintln(w, "link:   none")
	}
	if len(d.Slots) == 0 {
		fmt.Fprintln(w, "stamps: no room on this card (UID only)")
	}
	for i, s := range d.Slots {
		mark := " "
		if i == d.Current {
			mark = "*"
		}
		fmt.Fprintf(w, "slot %d%s page %d, generation %d: ", i, mark, s.Page, s.Gen)
		if s.Stamp == nil {
			fmt.Fprintf(w, "%v\n", s.Err)
			continue
		}
		fmt.Fprintf(w, "counter %d, balance %d.%02d, venue %s, %s\n", s.Stamp.Counter, s.Stamp.Balance/100, abs(s.Stamp.Balance%100),
			s.Stamp.Venue.Short(), time.Unix(s.Stamp.Time, 0).UTC().Format(time.RFC3339))
	}
	if d.Current < 0 && len(d.Slots) > 0 {
		fmt.Fprintln(w, "stamp:  none valid (a new card, or one whose stamp was never written)")
	}
	return nil
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// demoReaders makes a simulated reader per demo venue, and the demo's
// cards, kept in dir.
func demoReaders(dir string, names []string) ([]*nfc.SimReader, *nfc.SimCards, error) {
	cards, err := nfc.NewSimCards(filepath.Join(dir, "cards"), nfc.NTAG215)
	if err != nil {
		return nil, nil, err
	}
	var rs []*nfc.SimReader
	for _, n := range names {
		rs = append(rs, nfc.NewSimReader(n+" reader"))
	}
	return rs, cards, nil
}

// demoTapHelp says how to tap cards in the demo.
const demoTapHelp = `Each venue has a simulated NFC reader. Tap a card from this terminal:
  tap 1 04A1B2C3D4E5F6     (puts the card on venue 1's reader; the point of sale sees it)
  remove 1                 (takes it off)
or through the API: POST /api/v1/taps/simulate {"card": "04A1B2C3D4E5F6"} ({"remove": true} takes it off).
`

// terminalTaps reads "tap N CARD" and "remove N" lines from in until it
// ends or ctx ends (a line being read when ctx ends is dropped).
func terminalTaps(ctx context.Context, in io.Reader, out io.Writer, readers []*nfc.SimReader, cards *nfc.SimCards) {
	sc := bufio.NewScanner(io.LimitReader(in, 1<<20))
	for sc.Scan() {
		if ctx.Err() != nil {
			return
		}
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		var idx int
		if len(f) >= 2 {
			n, err := strconv.Atoi(f[1])
			if err != nil || n < 1 || n > len(readers) {
				fmt.Fprintf(out, "venue number 1 to %d, got %q\n", len(readers), f[1])
				continue
			}
			idx = n - 1
		}
		switch {
		case f[0] == "tap" && len(f) == 3:
			tag, err := cards.Tag(crdt.CardID(strings.ToUpper(f[2])))
			if err != nil {
				fmt.Fprintln(out, err)
				continue
			}
			readers[idx].Present(tag)
			fmt.Fprintf(out, "card %s on %s\n", tag.UID(), readers[idx].Name())
		case f[0] == "remove" && len(f) == 2:
			readers[idx].Remove()
			fmt.Fprintf(out, "%s: no card\n", readers[idx].Name())
		default:
			fmt.Fprint(out, demoTapHelp)
		}
	}
}

// stdinIsTerminal reports whether standard input is a terminal (so the
// demo reads taps from it).
func stdinIsTerminal() bool {
	st, err := os.Stdin.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
