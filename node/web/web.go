// Package web holds the node's web pages: html/template templates and
// static files embedded in the binary (no build step, no CDN), the French
// and English strings of every page, and the formatting of money and dates
// in each language. The handlers live in package node (node/web*.go); this
// package knows nothing of the node's state.
package web

import (
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Pages lists the page templates; each is parsed with layout.html.
var Pages = []string{"home", "pos_login", "pos", "products", "staff_events", "holder", "agenda", "event", "dashboard", "error"}

// Templates are the parsed pages, by name (see Pages).
type Templates map[string]*template.Template

// ParseTemplates returns every page parsed with the layout. The templates
// are parsed once (they are embedded and never change) and are safe for
// concurrent use.
func ParseTemplates() (Templates, error) { return parsed() }

var parsed = sync.OnceValues(parse)

func parse() (Templates, error) {
	out := Templates{}
	for _, p := range Pages {
		t, err := template.New("layout.html").ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", p, err)
		}
		out[p] = t
	}
	return out, nil
}

// TemplateSources returns the text of every template file, by file name
// (the tests check that every string key they use is translated).
func TemplateSources() (map[string]string, error) {
	out := map[string]string{}
	err := fs.WalkDir(templateFS, "templates", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := templateFS.ReadFile(path)
		out[path] = string(b)
		return err
	})
	return out, err
}

// StaticSource returns the text of one static file (e.g. "pos.js").
func StaticSource(name string) (string, error) {
	b, err := staticFS.ReadFile("static/" + name)
	return string(b), err
}

// Static serves the embedded static files under /static/.
func Static() http.Handler {
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	fsrv := http.StripPrefix("/static/", http.FileServer(http.FS(sub)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if name := strings.TrimPrefix(r.URL.Path, "/static/"); name != "" && !fs.ValidPath(name) {
			http.NotFound(w, r) // http.FS answers 500 for a name fs.FS refuses (found by FuzzAPIRoutes)
			return
		}
		fsrv.ServeHTTP(w, r)
	})
}

// Lang is a page language.
type Lang string

// The languages of the pages.
const (
	French  Lang = "fr"
	English Lang = "en"
)

// Langs are the supported languages.
var Langs = []Lang{French, English}

// ParseLang returns the language s names, if supported.
func ParseLang(s string) (Lang, bool) {
	l := Lang(strings.ToLower(strings.TrimSpace(s)))
	return l, slices.Contains(Langs, l)
}

// Negotiate picks the language of a request: an explicit choice (the
// ?lang= switch, then the lang cookie) wins, else the first of French or
// English in the browser's Accept-Language by preference, else English.
func Negotiate(choice, cookie, acceptLanguage string) Lang {
	if l, ok := ParseLang(choice); ok {
		return l
	}
	if l, ok := ParseLang(cookie); ok {
		return l
	}
	best, bestQ := English, -1.0
	for i, part := range strings.Split(acceptLanguage, ",") {
		if i > 32 {
			break
		}
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if _, err := fmt.Sscanf(v, "%g", &q); err != nil {
				q = 0
			}
		}
		base, _, _ := strings.Cut(strings.ToLower(tag), "-")
		if l, ok := ParseLang(base); ok && q > bestQ && q > 0 {
			best, bestQ = l, q
		}
	}
	return best
}

// Base is what every page's data embeds: the language and the venue, and
// the helpers the templates call ({{$.T "key"}}, {{$.Money 150}}).
type Base struct {
	Lang       Lang
	Currency   string
	Title      string
	Venue      string
	Federation string
	// CSRF is the token forms and scripts send back with writes.
	CSRF string
	// SwitchURL is this page in the other language.
	SwitchURL string
	// Staff is true when a staff session is open.
	Staff bool
	// Loc is the time zone dates are shown in.
	Loc *time.Location
}

// T returns the string key in the page's language.
func (b Base) T(key string) string { return Text(b.Lang, key) }

// Tf formats the string key with args.
func (b Base) Tf(key string, args ...any) string { return fmt.Sprintf(Text(b.Lang, key), args...) }

// Money formats cents in the federation's currency and the page's language.
func (b Base) Money(cents int64) string { return Money(b.Lang, b.Currency, cents) }

// MoneyU is Money for unsigned amounts.
func (b Base) MoneyU(cents uint64) string { return Money(b.Lang, b.Currency, int64(cents)) }

// DateTime formats t as a date and time in the page's language.
func (b Base) DateTime(t time.Time) string { return DateTime(b.Lang, t.In(b.loc())) }

// Date formats t's day in the page's language.
func (b Base) Date(t time.Time) string { return Date(b.Lang, t.In(b.loc())) }

// Clock formats t's time of day (HH:MM).
func (b Base) Clock(t time.Time) string { return t.In(b.loc()).Format("15:04") }

// Other is the language the switch leads to.
func (b Base) Other() Lang {
	if b.Lang == French {
		return English
	}
	return French
}

func (b Base) loc() *time.Location {
	if b.Loc == nil {
		return time.Local
	}
	return b.Loc
}

// Text returns the string key in lang; a missing key shows as ⟦key⟧ (and
// fails the tests).
func Text(lang Lang, key string) string {
	m, ok := messages[key]
	if !ok {
		return "⟦" + key + "⟧"
	}
	if lang == French {
		return m.fr
	}
	return m.en
}

// Keys returns every string key of the catalogue.
func Keys() []string {
	out := make([]string, 0, len(messages))
	for k := range messages {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Translated reports whether key has a non-empty text in every language.
func Translated(key string) bool {
	m, ok := messages[key]
	return ok && m.fr != "" && m.en != ""
}

// ScriptTexts returns the strings the pages' scripts use (keys starting
// with "js."), in lang, for a JSON data block.
func ScriptTexts(lang Lang) map[string]string {
	out := map[string]string{}
	for k := range messages {
		if strings.HasPrefix(k, "js.") {
			out[k] = Text(lang, k)
		}
	}
	return out
}

var currencySymbols = map[string]string{"EUR": "€", "USD": "$", "GBP": "£", "CHF": "CHF", "CAD": "$"}

// Money formats cents in currency (ISO 4217) as lang writes it:
// French "1 234,50 €", English "€1,234.50".
func Money(lang Lang, currency string, cents int64) string {
	neg := cents < 0
	if neg {
		cents = -cents
	}
	units, frac := cents/100, cents%100
	digits := fmt.Sprint(units)
	sep, dec := ",", "."
	if lang == French {
		sep, dec = "\u202f", ","
	}
	var g strings.Builder
	for i, c := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			g.WriteString(sep)
		}
		g.WriteRune(c)
	}
	num := fmt.Sprintf("%s%s%02d", g.String(), dec, frac)
	sym, ok := currencySymbols[currency]
	if !ok {
		sym = currency
	}
	sign := ""
	if neg {
		sign = "−"
	}
	if lang == French || len(sym) > 1 && !strings.ContainsAny(sym, "€$£") {
		if lang == French {
			return sign + num + "\u00a0" + sym
		}
		return sign + sym + "\u00a0" + num
	}
	return sign + sym + num
}

var (
	frDays   = []string{"dim.", "lun.", "mar.", "mer.", "jeu.", "ven.", "sam."}
	frMonths = []string{"janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.", "déc."}
)

// Date formats t's day: French "sam. 5 déc. 2026", English "Sat 5 Dec 2026".
func Date(lang Lang, t time.Time) string {
	if lang == French {
		return fmt.Sprintf("%s %d %s %d", frDays[t.Weekday()], t.Day(), frMonths[t.Month()-1], t.Year())
	}
	return t.Format("Mon 2 Jan 2006")
}

// DateTime formats t as Date and the time of day.
func DateTime(lang Lang, t time.Time) string {
	if lang == French {
		return Date(lang, t) + ", " + t.Format("15:04")
	}
	return Date(lang, t) + ", " + t.Format("15:04")
}
