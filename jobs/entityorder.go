package jobs

import (
	"cmp"
	"slices"

	"github.com/dmfexport/dmfexport/runs"
)

// formatCost is what reading one byte of an entity file costs, relative to
// CSV, by the file's format: an XLSX file is a zip whose sheet XML inflates
// to about ten times its size, so a byte of it costs about ten of a CSV
// (4.7 against 52 MB/s in BenchmarkXLSX and BenchmarkEncodeCSV, one core),
// and XML markup about six (BenchmarkXML). Other formats count as CSV.
var formatCost = map[string]int64{"xlsx": 10, "xml": 6}

// publishCost estimates the work of publishing an entity from its format
// and the size of its file (uncompressed, as stored from the package).
func publishCost(e *runs.EntityRecord) int64 {
	w, ok := formatCost[e.Format]
	if !ok {
		w = 1
	}
	return w * e.Bytes
}

// costliestFirst orders todo, indices into entities, by estimated cost,
// costliest first: parallel_entities workers take the long entities first
// and the short ones fill in at the end, so no single large entity is left
// running alone after the others are done (the longest-processing-time
// rule). Entities of equal cost keep their order in the manifest, so the
// order is the same in every run of the same package.
func costliestFirst(entities []runs.EntityRecord, todo []int) {
	slices.SortStableFunc(todo, func(a, b int) int {
		return cmp.Compare(publishCost(&entities[b]), publishCost(&entities[a]))
	})
}
