package runs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/dmfexport/dmfexport/store"
)

// ClaimSlot claims one scheduled fire of the export across replicas: every
// replica computes the same slot for the same fire, and only the one whose
// claim is created first runs it. It returns false when another replica
// claimed the slot first.
func (l *Ledger) ClaimSlot(ctx context.Context, slot time.Time) (bool, error) {
	body, _ := json.Marshal(leaseBody{Replica: l.replica, At: l.clock.Now().UTC()})
	if _, err := l.st.Create(ctx, l.Claim(slot), bytes.NewReader(body), nil); err != nil {
		if errors.Is(err, store.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("claim schedule slot %s: %w", slot.Format(time.RFC3339), err)
	}
	return true, nil
}

// claimTTL is how long a schedule slot's claim is kept: long enough that no
// replica still fires that slot, short enough that the claims stay few.
const claimTTL = time.Hour

// PruneClaims deletes the export's schedule slot claims older than
// claimTTL.
func (l *Ledger) PruneClaims(ctx context.Context) error {
	objs, err := l.st.List(ctx, l.claims())
	if err != nil {
		return fmt.Errorf("retention: list claims: %w", err)
	}
	now := l.clock.Now()
	var errs []error
	for _, o := range objs {
		slot, err := time.Parse(slotLayout, path.Base(o.Key))
		if err != nil || now.Sub(slot) < claimTTL {
			continue
		}
		if err := l.st.Delete(ctx, o.Key); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
