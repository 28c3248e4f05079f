ARGS="amqp-bookings --spawn --wallets 10000 --setup sql --duration 30s --warmup 5s --rate 1000"
for x in "A1 base on" "B1 base off" "C1 new on" "C2 new on" "B2 base off" "A2 base on"; do set -- $x; ./run.sh $1 /tmp/lt/loadtest-$2 $3 $ARGS; done
