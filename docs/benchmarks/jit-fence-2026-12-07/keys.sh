ARGS="http-debits --spawn --wallets 10000 --setup sql --duration 40s --warmup 5s --rate 1000 --idempotency-keys"
for x in "K-B1 base off" "K-C1 new off" "K-C2 new off" "K-B2 base off"; do set -- $x; ./run.sh $1 /tmp/lt/loadtest-$2 $3 $ARGS; done
