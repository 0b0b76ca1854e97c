package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

// faultFlags collects --fault rules. Set never fails, so that every bad
// rule is reported together with the other flag problems.
type faultFlags struct {
	rules    []dmftest.APIFault
	problems []string
}

func (f *faultFlags) String() string { return fmt.Sprintf("%d rules", len(f.rules)) }

func (f *faultFlags) Set(v string) error {
	r, err := parseFault(v)
	if err != nil {
		f.problems = append(f.problems, fmt.Sprintf("--fault %q: %v", v, err))
		return nil
	}
	f.rules = append(f.rules, r)
	return nil
}

// knownFaultActions are the values --fault accepts for action=.
var knownFaultActions = []string{"ExportToPackage", "GetExecutionSummaryStatus", "GetExportedPackageUrl",
	"GetExecutionErrors", "GetExecutionSummaryPageUrl", "download"}

// parseFault reads one --fault SPEC: comma-separated key=value items
// action, first, every, status, answer, retry-after, delay and the switches
// retry-after-date, reset and apply. A rule must fail (status or reset) or
// delay.
func parseFault(spec string) (dmftest.APIFault, error) {
	var r dmftest.APIFault
	if strings.TrimSpace(spec) == "" {
		return r, fmt.Errorf("empty rule; want e.g. action=ExportToPackage,status=503,first=2")
	}
	count := func(key, v string) (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%s=%q: want a whole number ≥ 0", key, v)
		}
		return n, nil
	}
	duration := func(key, v string) (time.Duration, error) {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("%s=%q: want a duration ≥ 0 such as 2s", key, v)
		}
		return d, nil
	}
	for _, item := range strings.Split(spec, ",") {
		key, v, hasValue := strings.Cut(strings.TrimSpace(item), "=")
		key, v = strings.ToLower(strings.TrimSpace(key)), strings.TrimSpace(v)
		var err error
		switch key {
		case "action":
			r.Action = ""
			for _, a := range knownFaultActions {
				if strings.EqualFold(a, v) {
					r.Action = a
				}
			}
			if r.Action == "" && v != "" && v != "*" {
				err = fmt.Errorf("action=%q: want one of %s, or * for every action", v, strings.Join(knownFaultActions, ", "))
			}
		case "first":
			r.First, err = count(key, v)
		case "every":
			r.Every, err = count(key, v)
		case "status":
			r.Status, err = count(key, v)
			if err == nil && (r.Status < 400 || r.Status > 599) {
				err = fmt.Errorf("status=%q: want an HTTP error status 400-599", v)
			}
		case "answer":
			r.Answer = ""
			for _, a := range dmftest.AnswerFaults {
				if strings.EqualFold(a, v) {
					r.Answer = a
				}
			}
			if r.Answer == "" {
				err = fmt.Errorf("answer=%q: want one of %s", v, strings.Join(dmftest.AnswerFaults, ", "))
			}
		case "retry-after":
			r.RetryAfter, err = duration(key, v)
		case "delay":
			r.Delay, err = duration(key, v)
		case "retry-after-date", "reset", "apply":
			if hasValue {
				var b bool
				if b, err = strconv.ParseBool(v); err != nil {
					err = fmt.Errorf("%s=%q: want true or false", key, v)
				}
				hasValue = b
			} else {
				hasValue = true
			}
			switch key {
			case "retry-after-date":
				r.RetryAfterDate = hasValue
			case "reset":
				r.Reset = hasValue
			case "apply":
				r.Apply = hasValue
			}
		default:
			err = fmt.Errorf("unknown item %q; want action, first, every, status, answer, retry-after, retry-after-date, delay, reset or apply", key)
		}
		if err != nil {
			return dmftest.APIFault{}, err
		}
	}
	if r.Answer != "" && r.Action == "download" {
		return dmftest.APIFault{}, fmt.Errorf("answer=%s applies to API actions, not to downloads", r.Answer)
	}
	if r.Status == 0 && !r.Reset && r.Delay == 0 && r.Answer == "" {
		return dmftest.APIFault{}, fmt.Errorf("the rule does nothing; give status=CODE, reset, answer=KIND or delay=DURATION")
	}
	return r, nil
}
