package dmftest

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAPIFaultSelection checks which calls each rule picks and what they
// are answered.
func TestAPIFaultSelection(t *testing.T) {
	tests := []struct {
		name   string
		faults []APIFault
		action string
		want   []int // statuses of 6 calls
	}{
		{name: "first 2 of one action", faults: []APIFault{{Action: actionStatus, First: 2, Status: 503}}, action: actionStatus,
			want: []int{503, 503, 200, 200, 200, 200}},
		{name: "other actions untouched", faults: []APIFault{{Action: actionExport, First: 2, Status: 503}}, action: actionStatus,
			want: []int{200, 200, 200, 200, 200, 200}},
		{name: "every 3rd", faults: []APIFault{{Action: actionStatus, Every: 3, Status: 502}}, action: actionStatus,
			want: []int{200, 200, 502, 200, 200, 502}},
		{name: "first 1 and every 4th", faults: []APIFault{{First: 1, Every: 4, Status: 500}}, action: actionErrors,
			want: []int{500, 200, 200, 500, 200, 200}},
		{name: "all calls", faults: []APIFault{{Status: 504}}, action: actionSummaryPage,
			want: []int{504, 504, 504, 504, 504, 504}},
		{name: "first matching rule wins", faults: []APIFault{{Action: actionStatus, First: 1, Status: 429}, {Action: actionStatus, Status: 503}}, action: actionStatus,
			want: []int{429, 503, 503, 503, 503, 503}},
		{name: "delay only answers normally", faults: []APIFault{{Action: actionStatus, Delay: time.Millisecond}}, action: actionStatus,
			want: []int{200, 200, 200, 200, 200, 200}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, Faults: Faults{API: tt.faults}}, nil)
			var got []int
			for i := 0; i < 6; i++ {
				r := call(t, s.URL, tt.action, DefaultToken, idBody("x"))
				got = append(got, r.status)
				if r.status != 200 {
					odataErr(t, r) // fails unless F&O's OData error shape
				}
			}
			if fmtInts(got) != fmtInts(tt.want) {
				t.Errorf("statuses: want %v, got %v", tt.want, got)
			}
			if n := s.Calls(tt.action); n != 6 {
				t.Errorf("Calls(%s): want 6 (faulted calls count), got %d", tt.action, n)
			}
		})
	}
}

func fmtInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// TestRetryAfterForms checks Retry-After in seconds (rounded up) and as an
// HTTP date.
func TestRetryAfterForms(t *testing.T) {
	clock := newFakeClock()
	s := newTestServer(t, Options{Faults: Faults{API: []APIFault{
		{Action: actionStatus, First: 1, Status: 429, RetryAfter: 1500 * time.Millisecond},
		{Action: actionErrors, First: 1, Status: 429, RetryAfter: 90 * time.Second, RetryAfterDate: true},
		{Action: actionSummaryPage, First: 1, Status: 503},
	}}}, clock)
	if r := call(t, s.URL, actionStatus, DefaultToken, idBody("x")); r.status != 429 || r.header.Get("Retry-After") != "2" {
		t.Errorf("seconds: want 429 with Retry-After 2, got %d %q", r.status, r.header.Get("Retry-After"))
	}
	want := clock.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	if r := call(t, s.URL, actionErrors, DefaultToken, idBody("x")); r.status != 429 || r.header.Get("Retry-After") != want {
		t.Errorf("date: want 429 with Retry-After %q, got %d %q", want, r.status, r.header.Get("Retry-After"))
	}
	r := call(t, s.URL, actionSummaryPage, DefaultToken, idBody("x"))
	if msg := odataErr(t, r); r.status != 503 || r.header.Get("Retry-After") != "" || !strings.Contains(msg, "temporarily unavailable") {
		t.Errorf("503: want no Retry-After and a message about unavailability, got %d %q %q", r.status, r.header.Get("Retry-After"), msg)
	}
}

// TestApplyThenFail checks that an applied export exists although its
// answer was a failure, and that an unapplied one does not.
func TestApplyThenFail(t *testing.T) {
	for _, apply := range []bool{false, true} {
		t.Run("apply="+strconv.FormatBool(apply), func(t *testing.T) {
			s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()},
				Faults: Faults{API: []APIFault{{Action: actionExport, First: 1, Status: 504, Apply: apply}}}, RegisterDelay: -1}, nil)
			if r := call(t, s.URL, actionExport, DefaultToken, exportBody("G", "id-1", false)); r.status != 504 {
				t.Fatalf("export: want 504, got %d", r.status)
			}
			wantExports, wantStatus := 0, statusUnknown
			if apply {
				wantExports, wantStatus = 1, statusNotRun
			}
			if n := s.Exports(); n != wantExports {
				t.Errorf("Exports: want %d, got %d", wantExports, n)
			}
			if st := value(t, s.URL, actionStatus, idBody("id-1")); st != wantStatus {
				t.Errorf("status: want %s, got %s", wantStatus, st)
			}
		})
	}
}

// TestStuckAndExpired checks StuckExecution and ExpiredURLs.
func TestStuckAndExpired(t *testing.T) {
	clock := newFakeClock()
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, Faults: Faults{StuckExecution: true}}, clock)
	call(t, s.URL, actionExport, DefaultToken, exportBody("G", "id-1", false))
	clock.Advance(24 * time.Hour)
	if st := value(t, s.URL, actionStatus, idBody("id-1")); st != statusExecuting {
		t.Errorf("stuck: want Executing a day later, got %s", st)
	}

	s = newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, Faults: Faults{ExpiredURLs: 1}}, clock)
	runToEnd(t, s, clock, "G", "id-2")
	first := pkgURL(t, s.URL, "id-2")
	if r := get(t, first, nil); r.status != http.StatusForbidden || !strings.Contains(string(r.body), "Signed expiry time") {
		t.Errorf("first URL: want 403 expired, got %d %s", r.status, r.body)
	}
	second := value(t, s.URL, actionPackageURL, idBody("id-2"))
	if r := get(t, second, nil); r.status != http.StatusOK {
		t.Errorf("second URL: want 200, got %d %s", r.status, r.body)
	}
}

// TestDownloadFaults checks the bytes and headers of faulty downloads.
func TestDownloadFaults(t *testing.T) {
	clock := newFakeClock()
	whole := func() []byte {
		s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}}, clock)
		runToEnd(t, s, clock, "G", "id")
		return get(t, pkgURL(t, s.URL, "id"), nil).body
	}()
	n := len(whole)
	tests := []struct {
		name       string
		faults     Faults
		hdr        map[string]string
		wantStatus int
		wantLen    string // Content-Length header
		check      func(t *testing.T, body []byte)
	}{
		{name: "corrupt", faults: Faults{CorruptZip: true}, wantStatus: 200, wantLen: strconv.Itoa(n), check: func(t *testing.T, b []byte) {
			diff := 0
			for i := range b {
				if b[i] != whole[i] {
					diff++
				}
			}
			if len(b) != n || diff != 8 {
				t.Errorf("want %d bytes with 8 inverted, got %d bytes with %d differing", n, len(b), diff)
			}
		}},
		{name: "wrong length, smaller", faults: Faults{ContentLengthDelta: -10}, wantStatus: 200, wantLen: strconv.Itoa(n - 10), check: func(t *testing.T, b []byte) {
			if string(b) != string(whole[:n-10]) {
				t.Errorf("want the first %d bytes, got %d bytes", n-10, len(b))
			}
		}},
		{name: "resume range", faults: Faults{CorruptZip: true}, hdr: map[string]string{"Range": "bytes=10-"}, wantStatus: 206, wantLen: strconv.Itoa(n - 10)},
		{name: "other range refused", faults: Faults{CorruptZip: true}, hdr: map[string]string{"Range": "bytes=0-9"}, wantStatus: 416},
		{name: "If-Match mismatch", faults: Faults{CorruptZip: true}, hdr: map[string]string{"Range": "bytes=10-", "If-Match": `"0xdead"`}, wantStatus: 412},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, Faults: tt.faults}, clock)
			runToEnd(t, s, clock, "G", "id")
			r := get(t, pkgURL(t, s.URL, "id"), tt.hdr)
			if r.status != tt.wantStatus {
				t.Fatalf("status: want %d, got %d (%s)", tt.wantStatus, r.status, r.body)
			}
			if tt.wantLen != "" && r.header.Get("Content-Length") != tt.wantLen {
				t.Errorf("Content-Length: want %s, got %s", tt.wantLen, r.header.Get("Content-Length"))
			}
			if tt.check != nil {
				tt.check(t, r.body)
			}
		})
	}

	// DownloadFaultsFirst: the second download is whole.
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, Faults: Faults{CorruptZip: true, DownloadFaultsFirst: 1}}, clock)
	runToEnd(t, s, clock, "G", "id")
	u := pkgURL(t, s.URL, "id")
	if a, b := get(t, u, nil).body, get(t, u, nil).body; string(a) == string(whole) || string(b) != string(whole) {
		t.Errorf("DownloadFaultsFirst 1: want the first download corrupt and the second whole")
	}
}

func FuzzOpenRange(f *testing.F) {
	for _, seed := range []string{"bytes=0-", "bytes=10-", "bytes=-5", "bytes=0-9", "bytes=99999999999999999999-", "items=1-", ""} {
		f.Add(seed, 100)
	}
	f.Fuzz(func(t *testing.T, h string, n int) {
		first, ok := openRange(h, n)
		if ok && (first < 0 || first >= n) {
			t.Fatalf("openRange(%q, %d) = %d, outside the body", h, n, first)
		}
	})
}
