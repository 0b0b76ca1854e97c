package dmf

import (
	"encoding/json"
	"strings"
	"testing"
)

func FuzzParseValue(f *testing.F) {
	for _, seed := range []string{
		`{"@odata.context":"https://e/data/$metadata#Edm.String","value":"Succeeded"}`,
		`{"value":{"value":"id-1"}}`,
		`{"@odata.context":"x","value":{"@odata.context":"y","value":null}}`,
		`{"value":null}`,
		`{"value":["a",{"m":1}]}`,
		`{"Value":"x","extra":[1,2,3]}`,
		`{"value":{"other":1}}`,
		`{}`,
		`null`,
		`[]`,
		`"value"`,
		`{"value":"\u0000\ud800"}`,
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := parseValue(body)
		if err != nil {
			return
		}
		if !json.Valid(v) {
			t.Fatalf("parseValue(%q) = %q without error, but that is not valid JSON", body, v)
		}
		s, err := valueString(v)
		if err == nil && firstByte(v) != '"' && s != "" {
			t.Fatalf("valueString(%q) = %q, want empty for a non-string value", v, s)
		}
		if _, err := parseErrors(v); err != nil && json.Valid(v) && firstByte(v) != '[' && firstByte(v) != '{' && firstByte(v) != '"' {
			t.Fatalf("parseErrors(%q) failed on a valid scalar: %v", v, err)
		}
	})
}

func FuzzParseErrors(f *testing.F) {
	for _, seed := range []string{
		`["Row 1 failed","Row 2 failed"]`,
		`"[\"a\",\"b\"]"`,
		`"plain message"`,
		`""`,
		`null`,
		`[]`,
		`"[]"`,
		`[{"EntityName":"Customers V3","ErrorMessage":"bad"},{"Code":7},null,3,true]`,
		`"[{\"message\":\"m\"}]"`,
		`"\"[\\\"deep\\\"]\""`,
		`{"message":"single"}`,
		`42`,
		`[`,
		`"unterminated`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		msgs, err := parseErrors(json.RawMessage(raw))
		if err != nil {
			return
		}
		if msgs == nil {
			t.Fatalf("parseErrors(%q) = nil slice without error, want an empty slice", raw)
		}
		for _, m := range msgs {
			if strings.TrimSpace(m) == "" {
				t.Fatalf("parseErrors(%q) returned an empty message in %q", raw, msgs)
			}
		}
	})
}
