//! What append's depth check costs per event: `check_depth` on the binary jsonb of the append
//! benchmark's order payload (bench/append/single_ours.sql), timed over many rounds. Run by
//! bench/append.sh beside the append runs, so the figure can be set against the time of one
//! append_event in the same run. Prints nanoseconds per check.
//!
//!     cargo run --release -p eventstore-core --features encoder --example depth_check_cost

use std::hint::black_box;
use std::time::Instant;

use eventstore_core::envelope::check_depth;
use eventstore_core::jsonb::Container;

const PAYLOAD: &str = r#"{"order_id":"ord-2024-000042","customer_id":"cust-1234","currency":"EUR","total":"129.90","lines":[{"sku":"SKU-1001","qty":2,"price":"39.95"},{"sku":"SKU-2002","qty":1,"price":"50.00"}],"channel":"web"}"#;

fn main() {
    let value: serde_json::Value = serde_json::from_str(PAYLOAD).expect("the payload is JSON");
    let bytes = eventstore_core::encode::encode(&value);
    let root = Container::new(&bytes).and_then(Container::root).expect("readable jsonb");
    let rounds = 2_000_000u32;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..rounds {
            black_box(check_depth("data", black_box(root), 64)).expect("within the limit");
        }
        best = best.min(start.elapsed().as_nanos() as f64 / f64::from(rounds));
    }
    println!("{best:.1}");
}
