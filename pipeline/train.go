package pipeline

// Training jobs travel on their own work-queue stream, LF_TRAIN: one
// message per job on lf.train.<job>, holding the job's resolved train
// config. A train worker keeps the message in progress while it trains and
// acks it at the end; a worker that dies leaves it unacked, so it is
// redelivered after the consumer's AckWait to another worker, which resumes
// from the newest checkpoint in the job's output_dir.

// StreamTrain is the training-jobs stream (lf.train.>, work queue).
const StreamTrain = "LF_TRAIN"

// TrainSubject is lf.train.<job>.
func TrainSubject(job string) (string, error) { return subject("lf", "train", job) }

// TrainFilter is lf.train.<job> where job may be AnyToken.
func TrainFilter(job string) (string, error) { return filter("lf", "train", job) }
