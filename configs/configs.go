// Package configs holds the configurations that ship inside the dmfexport
// binary, so that they work from any directory.
package configs

import _ "embed"

// Demo is configs/demo.yaml, the configuration dmfexport demo runs when it
// is given none.
//
//go:embed demo.yaml
var Demo []byte
