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
		`"[{\"RecordId\":\"5637144577\",\"Field\":\"CUSTGROUP\",\"ErrorMessage\":\"Group 'X' does not exist\"}]"`,
		`"[{\"RecordId\":\"1\",\"Field\":\"NAME\",\"ErrorMessage\":\"Value \"A\" is invalid\"}]"`,
		`[{"RecordId":5637144577,"Field":"NAME","ErrorMessage":"too long"}]`,
		`[{"RecordId":"","Field":"","ErrorMessage":""}]`,
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
			if strings.TrimSpace(m.Message) == "" {
				t.Fatalf("parseErrors(%q) returned an empty message in %q", raw, msgs)
			}
		}
	})
}

func FuzzParseErrorBody(f *testing.F) {
	for _, seed := range []string{
		`{"error":{"code":"","message":"An error has occurred.","innererror":{"message":"Execution details were not found for execution id X","type":"System.Exception","stacktrace":"..."}}}`,
		`{"error":{"code":"C","message":"m","innererror":{"message":"a","internalexception":{"message":"b","internalexception":{"message":"c"}}}}}`,
		`{"error":{"code":"C","message":{"lang":"en","value":"v3"}}}`,
		`{"error":{"innererror":{"innererror":{"message":"nested"}}}}`,
		`{"Message":"Authentication failed."}`,
		`{"error":"text"}`,
		`{"error":null}`,
		`{"error":{"code":12,"message":null}}`,
		`<html>bad gateway</html>`,
		``,
		`null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		code, msg, details, ok := parseErrorBody(body)
		if !ok {
			if code != "" || msg != "" || len(details) > 0 {
				t.Fatalf("parseErrorBody(%q) = %q, %q, %q without ok", body, code, msg, details)
			}
			return
		}
		if len(details) > maxInnerErrors {
			t.Fatalf("parseErrorBody(%q) kept %d inner messages, want at most %d", body, len(details), maxInnerErrors)
		}
		for _, d := range details {
			if strings.TrimSpace(d) == "" {
				t.Fatalf("parseErrorBody(%q) kept an empty inner message", body)
			}
		}
		e := &APIError{Action: "A", StatusCode: 400, Code: code, Message: msg, Details: details}
		text := e.Text()
		if text == "" && (msg != "" || len(details) > 0) {
			t.Fatalf("Text() empty for message %q and details %q", msg, details)
		}
		if len(details) > 0 && !strings.Contains(text, strings.TrimSpace(details[0])) {
			t.Fatalf("Text() = %q lacks the first inner message %q", text, details[0])
		}
	})
}
