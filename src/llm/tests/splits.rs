//! Every split of every recorded stream gives the same usage.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

// ---------------------------------------------------------------------------------------
// Usage: every split of every recorded stream gives the same usage.

#[test]
fn every_single_split_and_byte_by_byte_feeding_give_the_same_usage() {
    for (name, body, usage) in streams() {
        let whole = parse_all(SSE, &body).1.stats();
        for cut in 0..=body.len() {
            let (got, p) = run_split(SSE, &body, &[cut]);
            assert_eq!(got, Some(usage), "{name}: cut at {cut}");
            assert_eq!(p.stats(), whole, "{name}: cut at {cut}");
        }
        let mut p = UsageParser::new(SSE);
        for b in &body {
            p.feed(std::slice::from_ref(b));
        }
        assert_eq!(p.finish(), Some(usage), "{name}: byte by byte");
    }
}

fn cuts_of(len: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..=len, 0..40).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

proptest! {
    #![proptest_config(pt(256))]

    /// Random split points (many chunks, some empty) of each recorded stream.
    #[test]
    fn random_splits_give_the_same_usage(which in 0..12usize, seed in any::<u64>()) {
        let all = streams();
        let (name, body, usage) = &all[which % all.len()];
        let mut rng = seed;
        let mut cuts: Vec<usize> = (0..(seed % 40)).map(|_| {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 33) as usize % (body.len() + 1)
        }).collect();
        cuts.sort_unstable();
        let (got, _) = run_split(SSE, body, &cuts);
        prop_assert_eq!(got, Some(*usage), "{} cut at {:?}", name, cuts);
    }

    /// The same with proptest-chosen cuts (shrinks to a minimal failing split).
    #[test]
    fn chosen_splits_of_the_anthropic_stream_give_the_same_usage(cuts in cuts_of(ANTHROPIC_SSE.replace('\n', "\r\n").len())) {
        let body = ANTHROPIC_SSE.replace('\n', "\r\n");
        prop_assert_eq!(run_split(SSE, body.as_bytes(), &cuts).0, Some(ANTHROPIC_USAGE));
    }

    /// Arbitrary bytes (rich in line ends, `data:` fields and usage keys), cut anywhere, never panic and never
    /// hold more than the bounds.
    #[test]
    fn arbitrary_bytes_stay_bounded(raw in prop::collection::vec(any::<u8>(), 0..3000), cuts in cuts_of(3000), sse in any::<bool>()) {
        let body: Vec<u8> = raw.iter().flat_map(|&b| match b % 16 {
            0 => b"\n".to_vec(), 1 => b"\r".to_vec(), 2 => b":".to_vec(), 3 => b"data: ".to_vec(),
            4 => b"\"usage\":{\"output_tokens\":".to_vec(), 5 => b"}".to_vec(), _ => vec![b],
        }).collect();
        let cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
        let chunks: Vec<&[u8]> = std::iter::once(0).chain(cuts.iter().copied()).zip(cuts.iter().copied().chain(std::iter::once(body.len())))
            .map(|(a, b)| &body[a..b]).collect();
        let limits = UsageLimits { max_json_bytes: 1000, max_event_bytes: 100 };
        let fmt = if sse { BodyFormat::EventStream } else { BodyFormat::Json };
        let mut p = UsageParser::with_limits(fmt, limits);
        let bound = if sse { 100 } else { 1000 };
        for c in &chunks {
            p.feed(c);
            prop_assert!(p.retained_bytes() <= bound);
        }
        let _ = p.finish();
    }
}

#[test]
fn a_usage_key_and_its_object_on_different_data_lines_are_read_at_every_split() {
    let bodies: [&[u8]; 3] = [
        b"data: {\"id\":\"x\",\"usage\"\ndata:  :{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
        b"data: {\"usage\":\ndata: {\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
        b"data: {\"x\":\"g\",\"usage\" : \r\ndata:\t{\"prompt_tokens\":3,\"completion_tokens\":4}}\r\n\r\n",
    ];
    for body in bodies {
        for cut in 0..=body.len() {
            let (got, _) = run_split(SSE, body, &[cut]);
            assert_eq!(got, Some(Usage { input: 3, output: 4 }), "{}: cut at {cut}", String::from_utf8_lossy(body));
        }
    }
    // A "usage" whose value is not an object is never parsed, wherever the body is cut.
    let body = b"data: {\"usage\":null,\"g\":\"usage\"}\n\ndata: {\"usage\" :\"{\"}\n\n";
    for cut in 0..=body.len() {
        let (got, p) = run_split(SSE, body, &[cut]);
        assert_eq!((got, p.stats().parsed), (None, 0), "cut at {cut}");
    }
}
