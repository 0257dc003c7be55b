//! Property tests (bounded, a few seconds in all): document validation never panics and names
//! the field it rejects; workflow parsing never panics on random or mutated files.

use std::path::PathBuf;

use ferry::documents::DocumentKind;
use ferry::workflow::Registry;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, with the field names validators look for showing up often.
fn any_json() -> impl Strategy<Value = Value> {
    let names = prop_oneof![
        Just("invoice_number".to_string()),
        Just("billCode".to_string()),
        Just("invoiceCode".to_string()),
        Just("items".to_string()),
        Just("total".to_string()),
        Just("quantity".to_string()),
        Just("price".to_string()),
        Just("customer".to_string()),
        Just("date".to_string()),
        Just("delivery_cost".to_string()),
        "[a-zA-Zđ_]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,20}".prop_map(Value::String),
        "[0-9]{1,30}(\\.[0-9]{0,30})?".prop_map(Value::String),
        Just(json!("2026-02-30")),
        Just(json!(1e308)),
        Just(json!("79228162514264337593543950335")),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((names.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A decimal as a JSON number written with exactly its digits.
fn num(d: &rust_decimal::Decimal) -> Value {
    serde_json::from_str(&d.normalize().to_string()).unwrap()
}

fn dec(v: &Value) -> rust_decimal::Decimal {
    v.to_string().parse().unwrap()
}

/// A valid 1C invoice from generated items (quantities and prices in whole kopecks or
/// thousandths, so quantity × price is exact).
fn valid_invoice() -> impl Strategy<Value = Value> {
    let item = (1u32..1000, 0u64..10_000_000, 0u32..3).prop_map(|(q, p, scale)| {
        let price = rust_decimal::Decimal::new(p as i64, scale);
        let quantity = rust_decimal::Decimal::from(q);
        (quantity, price)
    });
    (
        prop::collection::vec(item, 1..8),
        0u64..100_000,
        "[A-Z]{2,4}-[0-9]{1,6}",
    )
        .prop_map(|(items, delivery, number)| {
            let mut sum = rust_decimal::Decimal::from(delivery);
            let items: Vec<Value> = items
                .iter()
                .enumerate()
                .map(|(i, (q, p))| {
                    let total = q * p;
                    sum += total;
                    json!({
                        "articul": format!("ФР-{i:08}"),
                        "name": format!("Товар {i}"),
                        "quantity": num(q),
                        "price": num(p),
                        "total": num(&total),
                    })
                })
                .collect();
            json!({
                "invoice_number": number,
                "date": "2026-02-13",
                "customer": { "name": "Иван", "phone": "+79991234567", "address": "Москва" },
                "items": items,
                "delivery_cost": delivery,
                "total": num(&sum),
            })
        })
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn validate_never_panics(v in any_json()) {
        for kind in DocumentKind::ALL {
            let _ = kind.validate(&v);
        }
    }

    #[test]
    fn validate_never_panics_on_near_invoices(mut v in valid_invoice(), junk in any_json(), field in 0usize..8) {
        // Replace one field of a valid invoice with junk.
        let keys = ["invoice_number", "date", "customer", "items", "delivery_cost", "total", "price", "quantity"];
        let k = keys[field];
        if k == "price" || k == "quantity" {
            v["items"][0][k] = junk;
        } else {
            v[k] = junk;
        }
        for kind in DocumentKind::ALL {
            let _ = kind.validate(&v);
        }
    }
}

proptest! {
    #![proptest_config(config(200))]

    #[test]
    fn generated_invoices_pass_and_a_perturbed_total_is_named(v in valid_invoice(), which in any::<prop::sample::Index>(), delta in 1i64..1000) {
        prop_assert_eq!(DocumentKind::OnecInvoice.validate(&v), Ok(()), "{}", v);
        let n = v["items"].as_array().unwrap().len();
        let i = which.index(n + 1);
        let mut bad = v.clone();
        let field = if i == n {
            let t = dec(&bad["total"]);
            bad["total"] = num(&(t + rust_decimal::Decimal::from(delta)));
            "total".to_string()
        } else {
            let t = dec(&bad["items"][i]["total"]);
            bad["items"][i]["total"] = num(&(t + rust_decimal::Decimal::from(delta)));
            format!("items[{i}].total")
        };
        let err = DocumentKind::OnecInvoice.validate(&bad).expect_err("perturbed total accepted");
        prop_assert_eq!(err.fields().collect::<Vec<_>>(), vec![field.as_str()]);
    }
}

fn shipped_files() -> Vec<(PathBuf, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .collect();
    v.sort();
    v
}

fn lookup(name: &str) -> Option<String> {
    if name.ends_with("_ENDPOINT") {
        return None; // has a default in the file
    }
    Some(if name.ends_with("_URL") {
        "http://127.0.0.1:9".into()
    } else {
        format!("value-of-{name}")
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    SwapLines(usize, usize),
    ReplaceValue(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let text = prop_oneof![
        "\\PC{0,12}",
        Just("\"".to_string()),
        Just("[".to_string()),
        Just("${".to_string()),
        Just("${X:-".to_string()),
        Just("= [\"1ms\", \"-1s\"]".to_string()),
        Just("99999999999999999999".to_string()),
        Just("\n[reconcile]\nschedule = \"* * *\"\nsql = \"x\"\n".to_string()),
        Just("\n[target.circuit]\nfailures = 0\n".to_string()),
    ];
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), text.clone()).prop_map(|(a, t)| Mutation::Insert(a, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<usize>(), text).prop_map(|(a, t)| Mutation::ReplaceValue(a, t)),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let n = chars.len().max(1);
    match m {
        Mutation::Delete(a, len) => {
            let a = a % n;
            let b = (a + len).min(chars.len());
            chars.drain(a.min(chars.len())..b);
            chars.into_iter().collect()
        }
        Mutation::Insert(a, t) => {
            let a = a % n;
            let mut s: String = chars[..a.min(chars.len())].iter().collect();
            s.push_str(t);
            s.extend(&chars[a.min(chars.len())..]);
            s
        }
        Mutation::SwapLines(a, b) => {
            let mut lines: Vec<&str> = text.lines().collect();
            let l = lines.len().max(1);
            if !lines.is_empty() {
                lines.swap(a % l, b % l);
            }
            lines.join("\n")
        }
        Mutation::ReplaceValue(a, t) => {
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            let with_eq: Vec<usize> = (0..lines.len())
                .filter(|i| lines[*i].contains(" = "))
                .collect();
            if let Some(&i) = with_eq.get(a % with_eq.len().max(1)) {
                let key = lines[i].split(" = ").next().unwrap().to_string();
                lines[i] = format!("{key} = {t}");
            }
            lines.join("\n")
        }
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn workflow_parsing_never_panics_on_mutations(which in 0usize..4, muts in prop::collection::vec(mutation(), 1..4)) {
        let mut files = shipped_files();
        let i = which % files.len();
        let mut t = files[i].1.clone();
        for m in &muts {
            t = apply(&t, m);
        }
        files[i].1 = t;
        let _ = Registry::from_files(&files, &lookup);
    }

    #[test]
    fn workflow_parsing_never_panics_on_random_text(t in "\\PC{0,300}", name in "[a-z_]{1,12}") {
        let files = vec![(PathBuf::from(format!("{name}.toml")), t)];
        let _ = Registry::from_files(&files, &lookup);
    }
}

#[test]
fn shipped_files_parse_unmutated() {
    Registry::from_files(&shipped_files(), &lookup).unwrap();
}
