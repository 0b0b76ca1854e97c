// Package buildinfo serves dmfexport_build_info, the series that says which
// build a scraped process runs: a dashboard or an alert can join it on the
// target's labels to show the version behind a change in behaviour.
package buildinfo

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Revision is the commit the binary was built from, as the Go toolchain
// stamped it (vcs.revision, with "-dirty" for a modified work tree), or
// "unknown" for a build outside a repository.
func Revision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	revision, modified := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if revision == "" {
		return "unknown"
	}
	if modified {
		revision += "-dirty"
	}
	return revision
}

// Collector is the gauge dmfexport_build_info{version, goversion, revision},
// always 1, for a process of the given version.
func Collector(version string) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dmfexport_build_info",
		Help: "Always 1; its labels say which build of dmfexport the process runs: version, Go version and source revision.",
		ConstLabels: prometheus.Labels{
			"version": version, "goversion": runtime.Version(), "revision": Revision(),
		},
	}, func() float64 { return 1 })
}
