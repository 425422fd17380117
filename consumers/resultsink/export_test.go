package resultsink

// OpenUnnamed is openUnnamed, for the tests of package resultsink_test.
var OpenUnnamed = openUnnamed
