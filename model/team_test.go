package model

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every call of a run happens once before run returns, whether the team's
// helpers are spinning, asleep (a pause longer than teamSpin) or taken by
// another run at the same time.
func TestTeamRunsEveryCallOnce(t *testing.T) {
	var tm team
	check := func(workers int) {
		calls := make([]atomic.Int32, workers)
		tm.run(workers, func(w int) { calls[w].Add(1) })
		for w := range calls {
			if n := calls[w].Load(); n != 1 {
				t.Errorf("workers %d: f(%d) called %d times", workers, w, n)
			}
		}
	}
	for _, workers := range []int{1, 2, 3, 8, 2} {
		check(workers)
	}
	time.Sleep(5 * teamSpin) // the helpers fall asleep
	check(4)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				check(3)
			}
		})
	}
	wg.Wait()
}
