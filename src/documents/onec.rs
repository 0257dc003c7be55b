//! The 1C:UNF payment invoice ("Счёт на оплату").
//!
//! The shape is fixed by the 1C side's HTTP service: amounts are JSON
//! numbers, the totals must add up exactly, and the date is a plain
//! `YYYY-MM-DD`. 1C rejects (or worse, silently books) an invoice whose
//! sums do not match, so the arithmetic is checked here with exact decimals.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    expect_code, expect_decimal, expect_object, expect_str, problem, quoted, required, Problem,
    Problems,
};

/// Longest invoice number 1C accepts for the document number field.
const INVOICE_NUMBER_MAX: usize = 100;
/// Generous cap for free-text fields: big enough for any real name or
/// address, small enough that a runaway producer is caught here.
const TEXT_MAX: usize = 1000;
/// No real invoice has this many lines; a bigger array is a producer bug.
const ITEMS_MAX: usize = 10_000;

/// A 1C invoice, in exactly the JSON shape the 1C HTTP service expects.
///
/// Build one from order tables and `serde_json::to_value` it; amounts are
/// written as JSON numbers, never strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnecInvoice {
    pub invoice_number: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub customer: OnecCustomer,
    pub items: Vec<OnecItem>,
    #[serde(with = "decimal_number")]
    pub delivery_cost: Decimal,
    /// Sum of item totals plus delivery cost.
    #[serde(with = "decimal_number")]
    pub total: Decimal,
}

/// The buyer as printed on the invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnecCustomer {
    pub name: String,
    pub phone: String,
    pub address: String,
}

/// One invoice line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnecItem {
    /// 1C article code (артикул), e.g. `ФР-00000044`.
    pub articul: String,
    pub name: String,
    #[serde(with = "decimal_number")]
    pub quantity: Decimal,
    #[serde(with = "decimal_number")]
    pub price: Decimal,
    /// `quantity × price`.
    #[serde(with = "decimal_number")]
    pub total: Decimal,
}

impl OnecItem {
    /// A line whose total is computed; `None` if `quantity × price` overflows.
    pub fn new(
        articul: impl Into<String>,
        name: impl Into<String>,
        quantity: Decimal,
        price: Decimal,
    ) -> Option<OnecItem> {
        Some(OnecItem {
            articul: articul.into(),
            name: name.into(),
            quantity,
            price,
            total: quantity.checked_mul(price)?,
        })
    }
}

impl OnecInvoice {
    /// An invoice whose grand total is computed from its lines; `None` on overflow.
    pub fn new(
        invoice_number: impl Into<String>,
        date: impl Into<String>,
        customer: OnecCustomer,
        items: Vec<OnecItem>,
        delivery_cost: Decimal,
    ) -> Option<OnecInvoice> {
        let mut total = delivery_cost;
        for item in &items {
            total = total.checked_add(item.total)?;
        }
        Some(OnecInvoice {
            invoice_number: invoice_number.into(),
            date: date.into(),
            customer,
            items,
            delivery_cost,
            total,
        })
    }
}

/// Serde helpers writing a `Decimal` as a JSON number.
///
/// rust_decimal's own `Serialize` writes a string, which 1C rejects. Without
/// serde_json's `arbitrary_precision` feature a JSON number is an i64, u64 or
/// f64, so integers go out as integers and fractions as f64 — but only when
/// the f64 prints back as exactly the same decimal; otherwise serialization
/// fails rather than sending a different amount.
pub(crate) mod decimal_number {
    use std::fmt;
    use std::str::FromStr;

    use rust_decimal::prelude::ToPrimitive;
    use rust_decimal::Decimal;
    use serde::de::{self, Visitor};
    use serde::{ser, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        let value = value.normalize();
        if value.scale() == 0 {
            if let Some(i) = value.to_i64() {
                return serializer.serialize_i64(i);
            }
            if let Some(u) = value.to_u64() {
                return serializer.serialize_u64(u);
            }
        }
        match value.to_f64() {
            // Rust prints f64 as the shortest string that reads back as the
            // same f64, so comparing that text with the decimal is exact.
            Some(f) if Decimal::from_str(&f.to_string()).ok() == Some(value) => {
                serializer.serialize_f64(f)
            }
            _ => Err(ser::Error::custom(format!(
                "amount {value} cannot be written exactly as a JSON number"
            ))),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        deserializer.deserialize_any(DecimalVisitor)
    }

    struct DecimalVisitor;

    impl Visitor<'_> for DecimalVisitor {
        type Value = Decimal;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON number")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
            // Via the shortest text form so 0.1 becomes exactly 0.1.
            Decimal::from_str(&v.to_string())
                .map_err(|_| E::custom(format!("number {v} is out of the decimal range")))
        }
    }
}

/// Checks the whole invoice and records every problem found. A field that cannot be read (absent,
/// wrong type) is reported once and what depends on it is skipped rather than reported again:
/// a line whose amounts are unusable, or a negative delivery cost, leaves the grand total
/// unchecked, and a wrong line total
/// counts with its correct value (`quantity × price`), so the grand total is only reported when
/// it is wrong against the correct lines too.
pub(super) fn validate(problems: &mut Problems, payload: &Value) {
    let Some(root) = problems.take(expect_object(payload, "")) else {
        return;
    };

    problems.take(
        required(root, "", "invoice_number")
            .and_then(|v| expect_code(v, "invoice_number", INVOICE_NUMBER_MAX)),
    );

    problems.take(
        required(root, "", "date")
            .and_then(|v| expect_str(v, "date"))
            .and_then(|date| check_date(date).map_err(|text| problem("date", text))),
    );

    if let Some(customer) =
        problems.take(required(root, "", "customer").and_then(|v| expect_object(v, "customer")))
    {
        problems.take(
            required(customer, "customer", "name")
                .and_then(|v| expect_code(v, "customer.name", TEXT_MAX)),
        );
        for key in ["phone", "address"] {
            let path = format!("customer.{key}");
            problems.take(
                required(customer, "customer", key)
                    .and_then(|v| expect_str(v, &path))
                    .and_then(|text| check_length(text, &path)),
            );
        }
    }

    let items_sum = problems
        .take(required(root, "", "items").and_then(expect_items))
        .and_then(|items| {
            let mut sum = Some(Decimal::ZERO);
            for (index, item) in items.iter().enumerate() {
                let total = validate_item(problems, item, &format!("items[{index}]"));
                sum = match (sum, total) {
                    (Some(sum), Some(total)) => {
                        let next = sum.checked_add(total);
                        if next.is_none() {
                            problems.add(problem("items", "the sum of item totals overflows"));
                        }
                        next
                    }
                    _ => None,
                };
            }
            sum
        });

    let delivery = problems
        .take(required(root, "", "delivery_cost").and_then(|v| expect_decimal(v, "delivery_cost")))
        .and_then(|delivery| {
            if delivery < Decimal::ZERO {
                problems.add(problem(
                    "delivery_cost",
                    format!("must not be negative, got {}", delivery.normalize()),
                ));
                return None;
            }
            Some(delivery)
        });

    let total = problems.take(required(root, "", "total").and_then(|v| expect_decimal(v, "total")));
    let (Some(total), Some(items_sum), Some(delivery)) = (total, items_sum, delivery) else {
        return;
    };
    let Some(expected) = items_sum.checked_add(delivery) else {
        problems.add(problem("total", "items sum + delivery_cost overflows"));
        return;
    };
    if total != expected {
        problems.add(problem(
            "total",
            format!(
                "expected sum of item totals + delivery_cost = {} + {} = {}, got {}",
                items_sum.normalize(),
                delivery.normalize(),
                expected.normalize(),
                total.normalize()
            ),
        ));
    }
}

/// `items`: a non-empty array of at most [`ITEMS_MAX`] lines.
fn expect_items(value: &Value) -> Result<&Vec<Value>, Problem> {
    let Value::Array(items) = value else {
        return Err(problem(
            "items",
            format!("expected an array, got {}", super::type_name(value)),
        ));
    };
    if items.is_empty() {
        return Err(problem("items", "must contain at least one item"));
    }
    if items.len() > ITEMS_MAX {
        return Err(problem(
            "items",
            format!(
                "too many items: {}, at most {ITEMS_MAX} allowed",
                items.len()
            ),
        ));
    }
    Ok(items)
}

/// Checks one line, recording its problems, and returns the amount it adds to the invoice
/// (`quantity × price`), or `None` when its quantity or price is unusable.
fn validate_item(problems: &mut Problems, item: &Value, path: &str) -> Option<Decimal> {
    let object = problems.take(expect_object(item, path))?;
    let field = |key: &str| format!("{path}.{key}");

    problems.take(
        required(object, path, "articul").and_then(|v| expect_code(v, &field("articul"), TEXT_MAX)),
    );
    problems.take(
        required(object, path, "name").and_then(|v| expect_code(v, &field("name"), TEXT_MAX)),
    );

    let quantity = problems
        .take(
            required(object, path, "quantity").and_then(|v| expect_decimal(v, &field("quantity"))),
        )
        .and_then(|quantity| {
            if quantity <= Decimal::ZERO {
                problems.add(problem(
                    field("quantity"),
                    format!("must be greater than 0, got {}", quantity.normalize()),
                ));
                return None;
            }
            Some(quantity)
        });
    let price = problems
        .take(required(object, path, "price").and_then(|v| expect_decimal(v, &field("price"))))
        .and_then(|price| {
            if price < Decimal::ZERO {
                problems.add(problem(
                    field("price"),
                    format!("must not be negative, got {}", price.normalize()),
                ));
                return None;
            }
            Some(price)
        });
    let total = problems
        .take(required(object, path, "total").and_then(|v| expect_decimal(v, &field("total"))));

    let (quantity, price) = (quantity?, price?);
    let Some(expected) = quantity.checked_mul(price) else {
        problems.add(problem(field("total"), "quantity × price overflows"));
        return None;
    };
    if let Some(total) = total.filter(|t| *t != expected) {
        problems.add(problem(
            field("total"),
            format!(
                "expected quantity × price = {}, got {}",
                expected.normalize(),
                total.normalize()
            ),
        ));
    }
    Some(expected)
}

fn check_length(text: &str, path: &str) -> Result<(), Problem> {
    let chars = text.chars().count();
    if chars > TEXT_MAX {
        return Err(problem(
            path,
            format!("too long: {chars} characters, at most {TEXT_MAX} allowed"),
        ));
    }
    Ok(())
}

/// A real calendar date in `YYYY-MM-DD`, done by hand to keep chrono out of
/// this module (1C rejects `2026-02-30` with an unhelpful message).
fn check_date(text: &str) -> Result<(), String> {
    let bad_format = || format!("expected a date as YYYY-MM-DD, got {}", quoted(text));
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return Err(bad_format());
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = &bytes[range];
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    };
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return Err(bad_format());
    };
    if year == 0 {
        return Err(format!("year 0000 does not exist, got {text:?}"));
    }
    if !(1..=12).contains(&month) {
        return Err(format!("month must be 01..12, got {text:?}"));
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=days).contains(&day) {
        return Err(format!(
            "day must be 01..{days} for {year:04}-{month:02}, got {text:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::documents::{DocumentError, DocumentKind};
    use serde_json::json;

    /// The example from the 1C directive.
    pub(crate) fn sample() -> Value {
        json!({
            "invoice_number": "INV-2026-001",
            "date": "2026-02-13",
            "customer": { "name": "Иван Иванов", "phone": "+79991234567", "address": "Москва, ул. Ленина, 1" },
            "items": [ { "articul": "ФР-00000044", "name": "Варочная панель", "quantity": 2, "price": 122334, "total": 244668 } ],
            "delivery_cost": 500,
            "total": 245168
        })
    }

    fn check(payload: &Value) -> Result<(), DocumentError> {
        DocumentKind::OnecInvoice.validate(payload)
    }

    /// The one problem of a payload that must have exactly one.
    fn only(payload: &Value) -> Problem {
        let err = check(payload).expect_err("must be rejected");
        assert_eq!(err.problems.len(), 1, "{err}");
        err.problems.into_iter().next().unwrap()
    }

    /// Sets `path` (a JSON pointer) in the sample and returns its one problem.
    fn error_with(pointer: &str, value: Value) -> Problem {
        let mut payload = sample();
        *payload.pointer_mut(pointer).expect("pointer exists") = value;
        only(&payload)
    }

    fn error_without(parent: &str, key: &str) -> Problem {
        let mut payload = sample();
        payload
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .expect("object")
            .remove(key);
        only(&payload)
    }

    #[test]
    fn directive_example_is_valid() {
        assert_eq!(check(&sample()), Ok(()));
    }

    #[test]
    fn root_must_be_object() {
        let err = only(&json!([1]));
        assert_eq!(err.field, "$");
        assert_eq!(err.problem, "expected an object, got array");
    }

    #[test]
    fn invoice_number_rules() {
        let err = error_with("/invoice_number", json!("   "));
        assert_eq!(
            (err.field.as_str(), err.problem.as_str()),
            ("invoice_number", "must not be empty")
        );
        let err = error_with("/invoice_number", json!(17));
        assert_eq!(err.problem, "expected a string, got number");
        let err = error_with("/invoice_number", json!("Ж".repeat(101)));
        assert!(err.problem.contains("101 characters"), "{err}");
        assert_eq!(
            check(&{
                let mut p = sample();
                p["invoice_number"] = json!("Ж".repeat(100));
                p
            }),
            Ok(())
        );
        let err = error_without("", "invoice_number");
        assert_eq!(err.problem, "missing required field");
    }

    #[test]
    fn dates_are_real_calendar_dates() {
        for good in [
            "2024-02-29",
            "2000-02-29",
            "2026-12-31",
            "0001-01-01",
            "2026-04-30",
        ] {
            assert_eq!(check_date(good), Ok(()), "{good}");
        }
        for bad in [
            "2026-02-29",
            "1900-02-29",
            "2026-04-31",
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
            "0000-01-01",
            "2026-1-01",
            "26-01-01",
            "2026/01/01",
            "2026-01-01T00:00:00",
            "",
            "２０２６-01-01",
            "+026-01-01",
        ] {
            assert!(check_date(bad).is_err(), "{bad}");
        }
        let err = error_with("/date", json!("2026-02-30"));
        assert_eq!(err.field, "date");
        assert!(err.problem.contains("01..28"), "{err}");
        let err = error_with("/date", json!(20260213));
        assert_eq!(err.problem, "expected a string, got number");
    }

    #[test]
    fn customer_rules() {
        let err = error_with("/customer", json!("Иван"));
        assert_eq!(
            (err.field.as_str(), err.problem.as_str()),
            ("customer", "expected an object, got string")
        );
        let err = error_with("/customer/name", json!(""));
        assert_eq!(err.field, "customer.name");
        let err = error_without("/customer", "phone");
        assert_eq!(
            (err.field.as_str(), err.problem.as_str()),
            ("customer.phone", "missing required field")
        );
        let err = error_with("/customer/address", json!(null));
        assert_eq!(err.problem, "expected a string, got null");
        // An empty phone is allowed: walk-in customers often have none.
        let mut payload = sample();
        payload["customer"]["phone"] = json!("");
        assert_eq!(check(&payload), Ok(()));
    }

    #[test]
    fn item_rules() {
        let err = error_with("/items", json!([]));
        assert_eq!(
            (err.field.as_str(), err.problem.as_str()),
            ("items", "must contain at least one item")
        );
        let err = error_with("/items", json!({}));
        assert_eq!(err.problem, "expected an array, got object");
        let err = error_with("/items/0", json!(5));
        assert_eq!(err.field, "items[0]");
        let err = error_with("/items/0/articul", json!(" "));
        assert_eq!(err.field, "items[0].articul");
        let err = error_with("/items/0/name", json!(1));
        assert_eq!(err.field, "items[0].name");
        let err = error_with("/items/0/quantity", json!(0));
        assert_eq!(err.problem, "must be greater than 0, got 0");
        let err = error_with("/items/0/quantity", json!("2"));
        assert_eq!(
            (err.field.as_str(), err.problem.as_str()),
            ("items[0].quantity", "expected a number, got string")
        );
        let err = error_with("/items/0/price", json!(-1));
        assert_eq!(err.problem, "must not be negative, got -1");
        let mut payload = sample();
        payload["items"][0]["total"] = json!(244000);
        let err = check(&payload).unwrap_err();
        assert_eq!(err.to_string(), "invalid onec_invoice document: items[0].total: expected quantity × price = 244668, got 244000");
    }

    #[test]
    fn second_item_errors_name_their_index() {
        let mut payload = sample();
        payload["items"] = json!([
            { "articul": "A", "name": "a", "quantity": 1, "price": 10, "total": 10 },
            { "articul": "B", "name": "b", "quantity": 3, "price": 0.1, "total": 0.31 }
        ]);
        // The grand total agrees with the correct lines (10 + 0.3 + 500): only the line is named.
        payload["total"] = json!(510.3);
        let err = only(&payload);
        assert_eq!(err.field, "items[1].total");
        assert_eq!(err.problem, "expected quantity × price = 0.3, got 0.31");
    }

    #[test]
    fn fractional_amounts_compare_exactly() {
        let mut payload = sample();
        payload["items"] =
            json!([{ "articul": "A", "name": "a", "quantity": 3, "price": 0.1, "total": 0.3 }]);
        payload["delivery_cost"] = json!(0.2);
        payload["total"] = json!(0.5);
        assert_eq!(check(&payload), Ok(()));
        payload["items"][0]["quantity"] = json!(1.5);
        payload["items"][0]["total"] = json!(0.15);
        payload["total"] = json!(0.35);
        assert_eq!(check(&payload), Ok(()));
    }

    #[test]
    fn delivery_and_grand_total_rules() {
        let err = error_without("", "delivery_cost");
        assert_eq!(
            (err.field.as_str(), err.problem.as_str()),
            ("delivery_cost", "missing required field")
        );
        let err = error_with("/delivery_cost", json!(-5));
        assert_eq!(err.field, "delivery_cost");
        let err = error_with("/total", json!(244668));
        assert_eq!(err.field, "total");
        assert_eq!(
            err.problem,
            "expected sum of item totals + delivery_cost = 244668 + 500 = 245168, got 244668"
        );
        let err = error_with("/total", json!("245168"));
        assert_eq!(err.problem, "expected a number, got string");
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let mut payload = sample();
        payload["items"][0]["quantity"] = json!(1e27);
        payload["items"][0]["price"] = json!(1e27);
        let err = only(&payload);
        assert_eq!(err.problem, "quantity × price overflows");
    }

    #[test]
    fn every_problem_is_reported_at_once_in_document_order() {
        let mut payload = sample();
        payload["invoice_number"] = json!("");
        payload["date"] = json!("2026-02-30");
        payload["customer"].as_object_mut().unwrap().remove("phone");
        payload["items"] = json!([
            { "articul": "A", "name": "a", "quantity": 1, "price": 10, "total": 11 },
            { "articul": " ", "name": 5, "quantity": 0, "price": -1, "total": "x" },
            "not a line"
        ]);
        payload["delivery_cost"] = json!(-5);
        let err = check(&payload).unwrap_err();
        assert_eq!(
            err.fields().collect::<Vec<_>>(),
            [
                "invoice_number",
                "date",
                "customer.phone",
                "items[0].total",
                "items[1].articul",
                "items[1].name",
                "items[1].quantity",
                "items[1].price",
                "items[1].total",
                "items[2]",
                "delivery_cost",
            ],
            "{err}"
        );
        // The grand total cannot be checked (lines 1 and 2 have no usable amounts): not reported.
        let text = err.to_string();
        assert!(
            text.starts_with("invalid onec_invoice document, 11 problems: invoice_number: must not be empty; date: "),
            "{text}"
        );
    }

    #[test]
    fn a_wrong_line_total_is_not_reported_again_as_a_wrong_grand_total() {
        // The grand total matches the correct line (244668 + 500): only the line is wrong.
        let mut payload = sample();
        payload["items"][0]["total"] = json!(244000);
        assert_eq!(only(&payload).field, "items[0].total");
        // Both wrong: both named.
        payload["total"] = json!(244500);
        let err = check(&payload).unwrap_err();
        assert_eq!(
            err.fields().collect::<Vec<_>>(),
            ["items[0].total", "total"]
        );
    }

    #[test]
    fn huge_documents_give_bounded_errors() {
        let mut payload = sample();
        payload["date"] = json!("x".repeat(1_000_000));
        payload["items"] = json!(vec![
            json!({ "articul": "A", "name": "a", "quantity": 1, "price": 2, "total": 3 });
            ITEMS_MAX
        ]);
        let err = check(&payload).unwrap_err();
        assert_eq!(err.count(), ITEMS_MAX + 2, "date, every line, the total");
        assert_eq!(err.problems.len(), crate::documents::MAX_PROBLEMS);
        let text = err.to_string();
        assert!(text.len() < 1500, "{} bytes", text.len());
        assert!(
            text.contains("date: expected a date as YYYY-MM-DD, got \"xxx"),
            "{text}"
        );
        assert!(text.ends_with(" more"), "{text}");
    }

    #[test]
    fn typed_invoice_serializes_to_the_directive_shape() {
        let dec = |s: &str| Decimal::from_str(s).unwrap();
        let item =
            OnecItem::new("ФР-00000044", "Варочная панель", dec("2"), dec("122334.00")).unwrap();
        let invoice = OnecInvoice::new(
            "INV-2026-001",
            "2026-02-13",
            OnecCustomer {
                name: "Иван Иванов".into(),
                phone: "+79991234567".into(),
                address: "Москва, ул. Ленина, 1".into(),
            },
            vec![item],
            dec("500"),
        )
        .unwrap();
        let value = serde_json::to_value(&invoice).unwrap();
        assert_eq!(value, sample());
        assert!(value["total"].is_number());
        let back: OnecInvoice = serde_json::from_value(value).unwrap();
        assert_eq!(back.total, dec("245168"));
    }

    #[test]
    fn fractional_decimals_serialize_as_numbers() {
        let item = OnecItem::new(
            "A",
            "a",
            Decimal::from_str("1.5").unwrap(),
            Decimal::from_str("0.1").unwrap(),
        )
        .unwrap();
        let value = serde_json::to_value(&item).unwrap();
        assert_eq!(
            value,
            json!({"articul": "A", "name": "a", "quantity": 1.5, "price": 0.1, "total": 0.15})
        );
        let text = serde_json::to_string(&item).unwrap();
        assert!(text.contains("\"total\":0.15"), "{text}");
        let back: OnecItem = serde_json::from_str(&text).unwrap();
        assert_eq!(back, item);
    }

    #[test]
    fn inexact_decimals_refuse_to_serialize() {
        // 28 significant digits cannot survive an f64; refusing beats
        // sending a different amount.
        let item = OnecItem {
            articul: "A".into(),
            name: "a".into(),
            quantity: Decimal::ONE,
            price: Decimal::from_str("0.1234567890123456789012345678").unwrap(),
            total: Decimal::from_str("0.1234567890123456789012345678").unwrap(),
        };
        let err = serde_json::to_value(&item).unwrap_err();
        assert!(
            err.to_string().contains("cannot be written exactly"),
            "{err}"
        );
    }

    #[test]
    fn strings_are_not_accepted_as_amounts_when_deserializing() {
        let text = r#"{"articul":"A","name":"a","quantity":"1","price":1,"total":1}"#;
        assert!(serde_json::from_str::<OnecItem>(text).is_err());
    }
}
