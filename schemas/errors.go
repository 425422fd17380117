package schemas

import (
	"errors"
	"fmt"
)

// Sentinel errors. Where DATA_DICTIONARY §7.1 names an error string, the
// sentinel's message is exactly that string, and Validate methods return the
// sentinel itself so that err.Error() is the dictionary's message.
var (
	// ErrInvalidRecord is matched (errors.Is) by every *ValidationError
	// returned for a training record.
	ErrInvalidRecord = errors.New("invalid record")
	// ErrModelNameRequired: model_name / model is empty (§7.1).
	ErrModelNameRequired = errors.New("Model name required")
	// ErrPromptTooLong: prompt longer than MaxPromptChars code points (§7.1).
	ErrPromptTooLong = errors.New("Prompt too long")
	// ErrInvalidMaxTokens: max_tokens outside 1..MaxMaxTokens (§7.1).
	ErrInvalidMaxTokens = errors.New("Invalid max_tokens")
	// ErrTemperatureOutOfRange: temperature outside [0, 2] (§7.1).
	ErrTemperatureOutOfRange = errors.New("Temperature out of range")
	// ErrLearningRateNotPositive: learning_rate <= 0 (§7.1).
	ErrLearningRateNotPositive = errors.New("Learning rate must be positive")
	// ErrBatchSizeTooSmall: per_device_batch_size < 1 (§7.1).
	ErrBatchSizeTooSmall = errors.New("Batch size must be at least 1")
	// ErrInvalidModelPath: a model name or path containing ".." (§7.2).
	ErrInvalidModelPath = errors.New("Invalid model path")
	// ErrUnknownFormat: a training data format name other than alpaca,
	// sharegpt or dpo.
	ErrUnknownFormat = errors.New("unknown format")
	// ErrInvalidDatasetName: a dataset name that is not a safe subject
	// token and key element (ValidateDatasetName).
	ErrInvalidDatasetName = errors.New("invalid dataset name")
	// ErrInvalidConfig is wrapped by every config error that has no
	// dictionary string of its own (bad syntax, unknown keys, range checks).
	ErrInvalidConfig = errors.New("invalid config")
	// ErrInvalidRequest is wrapped by every API request error that has no
	// dictionary string of its own (bad JSON, top_p, top_k, roles, ...).
	ErrInvalidRequest = errors.New("invalid request")
	// ErrBadMessage is wrapped when a job Request or Result message cannot
	// be decoded or breaks the message's own rules (ids, kind, body).
	ErrBadMessage = errors.New("bad job message")
	// ErrBadTrainJob is wrapped when a training job message (TrainJob)
	// cannot be decoded or holds an invalid run config.
	ErrBadTrainJob = errors.New("bad training job message")
	// ErrSchemaMismatch: an Arrow schema or record does not have the columns
	// ArrowSchema gives for the format.
	ErrSchemaMismatch = errors.New("arrow schema mismatch")
)

// requestErrors are the §7.1 sentinels of a request and the field each names.
var requestErrors = []struct {
	err   error
	param string
}{
	{ErrModelNameRequired, "model"},
	{ErrInvalidModelPath, "model"},
	{ErrPromptTooLong, "prompt"},
	{ErrInvalidMaxTokens, "max_tokens"},
	{ErrTemperatureOutOfRange, "temperature"},
}

// ValidationMessage is what every entry point (the gateway, submit, the
// workers, generate) reports for a refused request: a *LimitError gives its
// own message and its Param; an error matching a §7.1 sentinel exactly the
// dictionary's string and the field it names; any other error its own text
// and no parameter.
func ValidationMessage(err error) (msg, param string) {
	var le *LimitError
	if errors.As(err, &le) {
		return le.Error(), le.Param
	}
	for _, s := range requestErrors {
		if errors.Is(err, s.err) {
			return s.err.Error(), s.param
		}
	}
	return err.Error(), ""
}

// LimitError is a value beyond one of the documented limits, refused with a
// message in the §7.1 form: "Invalid <param>: <value> is over the limit of
// <limit>", then what sets the limit when Reason says. Param names the field
// (a dotted path inside a section: "lora.r"), Limit the largest value
// accepted. It matches ErrInvalidConfig for a config field, and
// ErrInvalidRequest for a request field (ErrInvalidMaxTokens too when Param is
// max_tokens), so that callers matching those keep working.
type LimitError struct {
	Param  string
	Value  int
	Limit  int
	Reason string
	kind   error
}

// ConfigLimitError is the refusal of a config field over its limit.
func ConfigLimitError(param string, value, limit int, reason string) *LimitError {
	return &LimitError{Param: param, Value: value, Limit: limit, Reason: reason, kind: ErrInvalidConfig}
}

// RequestLimitError is the refusal of a request field over its limit.
func RequestLimitError(param string, value, limit int, reason string) *LimitError {
	return &LimitError{Param: param, Value: value, Limit: limit, Reason: reason, kind: ErrInvalidRequest}
}

// Error is "Invalid <param>: <value> is over the limit of <limit>" and the
// reason in parentheses.
func (e *LimitError) Error() string {
	msg := fmt.Sprintf("Invalid %s: %d is over the limit of %d", e.Param, e.Value, e.Limit)
	if e.Reason != "" {
		msg += " (" + e.Reason + ")"
	}
	return msg
}

// Is matches the error's kind (ErrInvalidConfig or ErrInvalidRequest), and
// ErrInvalidMaxTokens for max_tokens.
func (e *LimitError) Is(target error) bool {
	return target == e.kind || (e.Param == "max_tokens" && target == ErrInvalidMaxTokens)
}
