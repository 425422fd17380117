//go:build race

package classifier_test

// raceEnabled: the race detector slows GoMLX down about 30 times.
const raceEnabled = true
