package jobs_test

import (
	"fmt"
	"time"

	"github.com/largeforge/largeforge/jobs"
)

func ExampleJob_SetStatus() {
	now := time.Unix(1700000000, 0)
	j, _ := jobs.NewJob(jobs.Spec{ID: "batch_1", Model: "stories"}, now)
	fmt.Println(j.Status)
	for _, to := range []jobs.Status{jobs.StatusInProgress, jobs.StatusCompleted, jobs.StatusFinalizing, jobs.StatusCompleted} {
		if err := j.SetStatus(to, now); err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(j.Status)
	}
	// Output:
	// validating
	// in_progress
	// illegal job status transition: job batch_1 from in_progress to completed
	// finalizing
	// completed
}
