package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// The strict request decoder. encoding/json alone accepts duplicate keys
// (the last one wins), matches keys case-insensitively ("Amount_Cents"
// fills amount_cents) and silently replaces invalid UTF-8 with U+FFFD. A
// write is signed and replicated for ever, so its request is checked first
// with a json.Decoder token walk over the raw body: every object's keys are
// unique (also up to case), the request's keys are exactly its fields, and
// every string is valid UTF-8 without control characters.

// maxJSONDepth bounds the nesting of a request body.
const maxJSONDepth = 16

// multilineFields may hold newlines and tabs; other text fields are one line.
var multilineFields = map[string]bool{"description": true}

// acceptedContentType reports whether a request body with this Content-Type
// is read as JSON. Besides application/json (and any +json type), the types
// that curl -d, HTML forms and fetch() send by default are accepted when
// the body is a JSON object: staff endpoints need an Authorization header,
// which a cross-site form cannot send, so this opens no CSRF hole.
func acceptedContentType(ct string) bool {
	if strings.TrimSpace(ct) == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	switch {
	case mt == "application/json", strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"):
		return true
	case mt == "application/x-www-form-urlencoded", mt == "text/plain":
		return true
	}
	return false
}

// decode reads one JSON object of at most MaxBodyBytes into v (a pointer to
// a struct), refusing unknown, duplicate and case-variant keys, invalid
// UTF-8, control characters in text and trailing data.
func (n *Node) decode(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := n.readBody(w, r)
	if err != nil {
		return err
	}
	return decodeStrict(body, v)
}

// readBody reads the request body within MaxBodyBytes after checking its
// Content-Type.
func (n *Node) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); !acceptedContentType(ct) {
		return nil, badRequest("Content-Type %q: the body must be JSON (send Content-Type: application/json)", ct)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, n.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, badRequest("request body larger than %d bytes", n.cfg.MaxBodyBytes)
		}
		return nil, badRequest("could not read the request body: %v", err)
	}
	return body, nil
}

// decodeStrict is decode on a body already read.
func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("the request body is empty: send a JSON object")
	}
	if err := checkJSON(body, knownFields(v)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("malformed JSON: %v", err)
	}
	if dec.More() {
		return badRequest("trailing data after the JSON object")
	}
	return nil
}

// fieldsCache maps a struct type to its JSON field names.
var fieldsCache sync.Map

// knownFields returns the JSON names of the fields of the struct v points
// to, as encoding/json would use them.
func knownFields(v any) []string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	if f, ok := fieldsCache.Load(t); ok {
		return f.([]string)
	}
	names := []string{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
	}
	fieldsCache.Store(t, names)
	return names
}

// checkJSON walks the tokens of body, which must be one JSON object whose
// keys are among fields (exactly, case included) when fields is not nil.
// Nested objects are checked for duplicate keys and text alike.
func checkJSON(body []byte, fields []string) error {
	w := &jsonWalker{dec: json.NewDecoder(bytes.NewReader(body)), body: body, fields: fields}
	w.dec.UseNumber()
	tok, err := w.token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return badRequest("the body must be a JSON object")
	}
	return w.object("", 1)
}

type jsonWalker struct {
	dec    *json.Decoder
	body   []byte
	fields []string
	start  int64 // input offset before the last token
}

func (w *jsonWalker) token() (json.Token, error) {
	w.start = w.dec.InputOffset()
	tok, err := w.dec.Token()
	if err != nil {
		return nil, badRequest("malformed JSON: %v", err)
	}
	return tok, nil
}

// raw returns the bytes of the last token (with the separators before it).
func (w *jsonWalker) raw() []byte { return w.body[w.start:w.dec.InputOffset()] }

func (w *jsonWalker) object(path string, depth int) error {
	if depth > maxJSONDepth {
		return badRequest("JSON nested deeper than %d levels", maxJSONDepth)
	}
	seen := map[string]string{} // folded key → key as sent
	for {
		tok, err := w.token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok && d == '}' {
			return nil
		}
		key, ok := tok.(string)
		if !ok {
			return badRequest("malformed JSON: expected a key")
		}
		if err := checkUTF8(w.raw(), key); err != nil {
			return badRequest("a key%s is not valid UTF-8", inField(path))
		}
		fk := foldKey(key)
		if prev, dup := seen[fk]; dup {
			if prev == key {
				return badRequest("duplicate key %q%s", key, inField(path))
			}
			return badRequest("keys %q and %q%s differ only by case: send one", prev, key, inField(path))
		}
		seen[fk] = key
		if path == "" && w.fields != nil && !slices.Contains(w.fields, key) {
			for _, f := range w.fields {
				if strings.EqualFold(f, key) {
					return badRequest("unknown field %q: keys are case-sensitive, did you mean %q?", key, f)
				}
			}
			return badRequest("unknown field %q (known fields: %s)", key, strings.Join(w.fields, ", "))
		}
		if err := w.value(joinPath(path, key), depth); err != nil {
			return err
		}
	}
}

func (w *jsonWalker) array(path string, depth int) error {
	if depth > maxJSONDepth {
		return badRequest("JSON nested deeper than %d levels", maxJSONDepth)
	}
	for i := 0; ; i++ {
		if !w.dec.More() {
			_, err := w.token() // the closing ]
			return err
		}
		if err := w.value(fmt.Sprintf("%s[%d]", path, i), depth); err != nil {
			return err
		}
	}
}

func (w *jsonWalker) value(path string, depth int) error {
	tok, err := w.token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		if t == '{' {
			return w.object(path, depth+1)
		}
		return w.array(path, depth+1)
	case string:
		if err := checkUTF8(w.raw(), t); err != nil {
			return badRequest("field %q is not valid UTF-8", path)
		}
		return checkText(path, t, multilineFields[path])
	}
	return nil
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func inField(path string) string {
	if path == "" {
		return ""
	}
	return fmt.Sprintf(" in field %q", path)
}

// checkUTF8 reports whether the raw JSON of a string token was valid UTF-8:
// the raw bytes are, and the decoder replaced no lone surrogate escape
// (\ud800) with U+FFFD.
func checkUTF8(raw []byte, decoded string) error {
	if !utf8.Valid(raw) {
		return errors.New("invalid UTF-8")
	}
	got := strings.Count(decoded, "\uFFFD")
	if got == 0 {
		return nil
	}
	sent := bytes.Count(raw, []byte("\uFFFD")) + countFold(raw, `\ufffd`)
	if got > sent {
		return errors.New("lone surrogate")
	}
	return nil
}

// countFold counts the ASCII case-insensitive occurrences of sub in b.
func countFold(b []byte, sub string) int {
	return bytes.Count(bytes.ToLower(b), []byte(sub))
}

// checkText refuses control characters (Unicode category Cc) in a text
// field; multiline fields may hold newlines and tabs.
func checkText(field, s string, multiline bool) error {
	for i, r := range s {
		if !unicode.IsControl(r) {
			continue
		}
		if multiline && (r == '\n' || r == '\r' || r == '\t') {
			continue
		}
		what := "text fields may not contain control characters"
		if multiline {
			what = "only newlines and tabs are allowed among control characters"
		}
		return badRequest("field %q holds the control character %U at byte %d: %s", field, r, i, what)
	}
	return nil
}

// foldKey maps a key to a representative of its case-folding class, so that
// two keys encoding/json would take for the same field fold alike (the same
// equivalence as strings.EqualFold).
func foldKey(s string) string {
	var b strings.Builder
	for _, r := range s {
		min := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < min {
				min = f
			}
		}
		b.WriteRune(min)
	}
	return b.String()
}

// methodNotAllowed answers a request no pattern matches: 405 with Allow
// when the path exists for other methods, else 404, both in the API's
// error shape.
func methodNotAllowed(mux *http.ServeMux, fallback string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
			if m == r.Method {
				continue
			}
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, p := mux.Handler(probe); p != "" && p != fallback {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, apiErr(http.StatusMethodNotAllowed, "method_not_allowed",
				fmt.Sprintf("%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, strings.Join(allow, ", "))))
			return
		}
		writeError(w, apiErr(http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path))
	}
}
