// Package faults is dmfexport's fault suite: whole runs of the built
// dmfexport and dmfsim binaries against the simulator and a private
// RabbitMQ node the suite starts itself, with one fault injected per case
// (kills, signals, broker cuts and alarms, store faults, F&O faults,
// replicas). Its tests build only with the faults tag:
//
//	make faults                               # every case
//	DMFEXPORT_FAULTS=ci go test -tags faults ./faults/   # the CI subset
//
// Each case prints one line: rows expected and received, duplicates (only
// ever with a repeated message ID), ExportToPackage calls, exit code, and
// whether the next start succeeds.
package faults
