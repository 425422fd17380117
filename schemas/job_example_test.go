package schemas_test

import (
	"fmt"

	"github.com/largeforge/largeforge/schemas"
)

func ExampleMsgID() {
	fmt.Println(schemas.MsgID("batch_1", "request-7"))
	// Output: batch_1/request-7
}
