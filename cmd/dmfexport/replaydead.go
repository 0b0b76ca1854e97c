package main

import (
	"context"
	"fmt"

	"github.com/dmfexport/dmfexport/sink"
)

// replayDeadCommand is "dmfexport sink replay-dead".
type replayDeadCommand struct{ g globalFlags }

func (c *replayDeadCommand) Usage() string {
	return `Usage: dmfexport sink replay-dead [--config FILE] NAME

Moves the batches in sink NAME's dead-letter queue (<queue>.dead) back to its queue, once the cause
is fixed (the entity given keys, the database's refusal resolved): same body and message ID, the
headers kept but the dead-letter reason (x-dmfexport-reason, x-dmfexport-sink) and the broker's
delivery count, marked with x-dmfexport-replayed. A batch already applied is still applied only
once. Moves the batches there when it starts and prints how many; a batch that fails again goes
back to the dead-letter queue after max_deliveries.
`
}

func (c *replayDeadCommand) Line(cl *commandLine) {
	cl.Config(&c.g, "info")
	cl.Args(1, 1, "name one sink")
}

func (c *replayDeadCommand) Run(ctx context.Context, names []string) error {
	cfg, err := c.g.load()
	if err != nil {
		return err
	}
	s, ok := cfg.Sink(names[0])
	if !ok {
		return fmt.Errorf("%w: no sink named %q in %s (known: %s)", errUsage, names[0], cfg.Path, sinkNames(cfg))
	}
	n, err := sink.ReplayDead(ctx, s.BrokerURL.Reveal(), s.Queue)
	if n > 0 || err == nil {
		fmt.Printf("sink %s: moved %d batches from %s back to %s\n", s.Name, n, sink.DeadLetterName(s.Queue), s.Queue)
	}
	if err != nil {
		return fmt.Errorf("sink %s: %w", s.Name, err)
	}
	return nil
}
