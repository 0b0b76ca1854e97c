// Package demo wires dmfexport demo: an F&O simulator in the process, the
// demo configuration pointed at it, and a file broker for every export
// whose RabbitMQ does not answer. The command parses flags and prints;
// what the demo runs against is set up here.
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/dmfexport/dmfexport/configs"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/publish"
)

// BuiltinConfig names the demo configuration built into the binary; as
// Options.Config it selects that configuration instead of a file.
const BuiltinConfig = "built-in configs/demo.yaml"

// probeTimeout bounds the wait for an export's broker to accept a
// connection before the demo writes files instead.
const probeTimeout = 5 * time.Second

// Options says which configuration the demo runs and where it reports.
type Options struct {
	// Config is the configuration file, or BuiltinConfig.
	Config string
	// FallbackDir receives an export's batches as NDJSON files when its
	// RabbitMQ does not answer.
	FallbackDir string
	// Out receives what the demo tells its user while it sets up.
	Out io.Writer
}

// Demo is a running simulator and the configuration pointed at it.
type Demo struct {
	// Config is the loaded configuration; Exports point into it.
	Config *jobs.Config
	// Exports are the configuration's exports, each with the broker it
	// will publish to (a file broker where RabbitMQ did not answer).
	Exports []*jobs.Export
	sim     *dmftest.Server
}

// Start starts the F&O simulator serving the demo data package, loads the
// configuration with ${DMFSIM_URL} and ${FO_TOKEN} naming the simulator,
// and turns every export whose RabbitMQ does not answer to NDJSON files
// under opts.FallbackDir. The caller closes the Demo.
func Start(ctx context.Context, opts Options) (*Demo, error) {
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{dmftest.DemoDefinitionGroup: dmftest.DemoProject()},
		ExecutionTime: time.Second,
	})
	fmt.Fprintf(opts.Out, "F&O simulator listening on %s (definition group %s)\n", sim.URL, dmftest.DemoDefinitionGroup)
	cfg, err := loadConfig(opts.Config, map[string]string{"DMFSIM_URL": sim.URL, "FO_TOKEN": dmftest.DefaultToken})
	if err != nil {
		sim.Close()
		return nil, err
	}
	d := &Demo{Config: cfg, sim: sim}
	for i := range cfg.Exports {
		e := &cfg.Exports[i]
		if e.Broker.Type == "amqp" {
			if err := probeBroker(ctx, e); err != nil {
				dir, _ := filepath.Abs(opts.FallbackDir)
				fmt.Fprintf(opts.Out, "No RabbitMQ answered for export %s (%v).\nWriting its batches as NDJSON files to %s instead.\n", e.Name, err, dir)
				e.Broker = jobs.BrokerConfig{Type: "file", Path: dir}
			}
		}
		d.Exports = append(d.Exports, e)
	}
	return d, nil
}

// Close stops the simulator.
func (d *Demo) Close() { d.sim.Close() }

// loadConfig loads the demo configuration: the file path names, or the
// built-in one. sim's settings win over the environment's for ${VAR}
// references, without changing the process environment.
func loadConfig(path string, sim map[string]string) (*jobs.Config, error) {
	lookup := func(name string) (string, bool) {
		if v, ok := sim[name]; ok {
			return v, true
		}
		return os.LookupEnv(name)
	}
	if path != BuiltinConfig {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read demo configuration: %w (leave out --config and DMFEXPORT_CONFIG to run the built-in one)", err)
		}
		return jobs.ParseConfig(path, data, lookup)
	}
	// The built-in file's relative paths resolve as if it were
	// ./configs/demo.yaml, as make demo runs it from the repository root:
	// its store ../dmfexport-data is ./dmfexport-data.
	wd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("demo: find the working directory: %w", err)
	}
	cfg, err := jobs.ParseConfig(filepath.Join(wd, "configs", "demo.yaml"), configs.Demo, lookup)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", BuiltinConfig, err)
	}
	cfg.Path = BuiltinConfig
	return cfg, nil
}

// probeBroker checks that the export's broker accepts a connection.
func probeBroker(ctx context.Context, e *jobs.Export) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	s, err := publish.DialAMQP(ctx, publish.AMQPOptions{URL: e.Broker.URL.Reveal(), ConnectionName: "dmfexport/demo-probe"})
	if err != nil {
		return err
	}
	return s.Close()
}
