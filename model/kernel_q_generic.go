//go:build !amd64 || purego

package model

func dot8(x []float32, q []int8, scales []float32, glen int) float32 {
	return dot8Go(x, q, scales, glen)
}

func dot4(x []float32, q []byte, scales, _ []float32, glen int) float32 {
	return dot4Go(x, q, scales, glen)
}

func dotQ8Blocks(q []int8, scales []float32, x q8Row) float32 { return dotQ8BlocksGo(q, scales, x) }
