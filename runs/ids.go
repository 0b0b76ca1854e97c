package runs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// NewRunID makes a run ID that sorts by start time t and is unique without
// coordination: "20261124T201500Z-1a2b3c4d".
func NewRunID(t time.Time) string {
	return t.UTC().Format(runIDTime) + "-" + randomHex(4)
}

// runIDTime is the layout of the start time a run ID begins with.
const runIDTime = "20060102T150405Z"

// RunStart reads the start time a run ID begins with (see NewRunID); zero
// when it does not.
func RunStart(runID string) time.Time {
	stamp, _, _ := strings.Cut(runID, "-")
	t, err := time.Parse(runIDTime, stamp)
	if err != nil {
		return time.Time{}
	}
	return t
}

// NewExecutionID makes the ID of a new F&O execution of definition group
// group started at t. It follows the shape Microsoft's own scheduler uses,
// "<project>-<yyyy-MM-dd_HH-mm-ss>-<random>", so operators recognise it in
// F&O's job history.
func NewExecutionID(group string, t time.Time) string {
	return fmt.Sprintf("%s-%s-%s", group, t.UTC().Format("2006-01-02_15-04-05"), randomHex(8))
}

// CheckExecutionID refuses an execution ID that could not be shown or
// logged as it is: empty, over 256 bytes, or holding control or invisible
// characters (a CR/LF would forge lines in every output naming the run).
func CheckExecutionID(id string) error {
	if id == "" || len(id) > 256 || !utf8.ValidString(id) {
		return errors.New("not a usable execution ID")
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) && r != ' ' {
			return fmt.Errorf("execution ID holds the character %q", r)
		}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// replicaID names this process in claims and leases: host, pid and a random
// part, so a restarted process on the same host is a different replica.
var replicaID = func() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), randomHex(4))
}()

// ReplicaID is the name this process writes into the leases, claims and
// clock readings it makes: "<host>/<pid>/<random>".
func ReplicaID() string { return replicaID }
