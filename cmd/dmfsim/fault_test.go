package main

import (
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

func TestParseFault(t *testing.T) {
	tests := []struct {
		spec    string
		want    dmftest.APIFault
		wantErr string
	}{
		{spec: "action=ExportToPackage,status=503,first=2", want: dmftest.APIFault{Action: "ExportToPackage", Status: 503, First: 2}},
		{spec: "action=getexecutionsummarystatus, status=429, every=3, retry-after=2s, retry-after-date",
			want: dmftest.APIFault{Action: "GetExecutionSummaryStatus", Status: 429, Every: 3, RetryAfter: 2 * time.Second, RetryAfterDate: true}},
		{spec: "action=*,reset,apply,first=1", want: dmftest.APIFault{Reset: true, Apply: true, First: 1}},
		{spec: "action=download,delay=500ms", want: dmftest.APIFault{Action: "download", Delay: 500 * time.Millisecond}},
		{spec: "status=500,apply=false", want: dmftest.APIFault{Status: 500}},
		{spec: "action=ExportToPackage,answer=HTML,apply,first=1", want: dmftest.APIFault{Action: "ExportToPackage", Answer: dmftest.AnswerHTML, Apply: true, First: 1}},
		{spec: "action=GetExecutionSummaryStatus,answer=gzip-bomb,every=3", want: dmftest.APIFault{Action: "GetExecutionSummaryStatus", Answer: dmftest.AnswerGzipBomb, Every: 3}},
		{spec: "answer=huge", wantErr: "want one of oversize, gzip-bomb, html, garbage"},
		{spec: "action=download,answer=html", wantErr: "not to downloads"},
		{spec: "", wantErr: "empty rule"},
		{spec: "action=Nope,status=500", wantErr: `action="Nope"`},
		{spec: "status=200", wantErr: "400-599"},
		{spec: "status=503,first=-1", wantErr: "whole number"},
		{spec: "delay=soon", wantErr: "duration"},
		{spec: "action=ExportToPackage", wantErr: "does nothing"},
		{spec: "status=503,colour=red", wantErr: `unknown item "colour"`},
		{spec: "reset=maybe", wantErr: "true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := parseFault(tt.spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want an error containing %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("want %+v, got %+v, %v", tt.want, got, err)
			}
		})
	}
}

func TestFaultFlags(t *testing.T) {
	cfg, err := parseArgs([]string{"--fault", "action=ExportToPackage,status=503,first=1,apply", "--fault", "status=429,every=5,retry-after=1s",
		"--stuck", "--expired-urls", "2", "--corrupt-zip", "--truncate-after", "100", "--content-length-delta", "-5",
		"--download-rate", "1000", "--download-faults-first", "3", "--stall-after", "70", "--endless-body"}, io.Discard)
	if err != nil {
		t.Fatalf("parseArgs: %v", err)
	}
	f := cfg.opts.Faults
	want := dmftest.Faults{
		API:            []dmftest.APIFault{{Action: "ExportToPackage", Status: 503, First: 1, Apply: true}, {Status: 429, Every: 5, RetryAfter: time.Second}},
		StuckExecution: true, ExpiredURLs: 2, CorruptZip: true, TruncateAfter: 100, ContentLengthDelta: -5, DownloadRate: 1000, DownloadFaultsFirst: 3,
		StallAfter: 70, EndlessBody: true,
	}
	if !reflect.DeepEqual(f, want) {
		t.Errorf("faults: want %+v, got %+v", want, f)
	}
	_, err = parseArgs([]string{"--fault", "status=1", "--fault", "bogus", "--download-rate", "-1"}, io.Discard)
	for _, w := range []string{`--fault "status=1"`, `--fault "bogus"`, "--download-rate must not be negative"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("bad fault flags: want an error containing %q, got %v", w, err)
		}
	}
}

func FuzzParseFault(f *testing.F) {
	for _, seed := range []string{"action=ExportToPackage,status=503,first=2", "reset,apply", "delay=1s", "status=429,retry-after=1.5s,retry-after-date=true", "=,=", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		r, err := parseFault(spec)
		if err != nil {
			return
		}
		if r.Status == 0 && !r.Reset && r.Delay == 0 {
			t.Fatalf("parseFault(%q) accepted a rule that does nothing: %+v", spec, r)
		}
		if r.First < 0 || r.Every < 0 || r.Delay < 0 || r.RetryAfter < 0 || (r.Status != 0 && (r.Status < 400 || r.Status > 599)) {
			t.Fatalf("parseFault(%q) accepted out-of-range values: %+v", spec, r)
		}
	})
}
