//! The mesh's global policies: rules every product and every contract of every domain keeps,
//! checked by pure functions on every node.
//!
//! Each rule has an id (shown in refusals and the catalog), a human explanation and a
//! machine check. A check never fails: it returns the violations it found, each with what
//! to change.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bounds::{BoundsError, check_count, check_len};
use crate::contract::ContractTerms;
use crate::descriptor::{
    MAX_PURPOSE_LEN, MAX_PURPOSES, MAX_TAG_LEN, MAX_TAGS, ProductDescriptor, validate_name,
};

/// Milliseconds in a day.
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// A descriptor field the policies can require.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequiredField {
    /// An owner contact (`publish --contact`).
    Contact,
    /// A description (`publish --description`).
    Description,
    /// A freshness promise in hours (`publish --freshness-hours`).
    FreshnessSla,
    /// At least one search tag (`publish --tag`).
    Tags,
}

impl RequiredField {
    /// Every field, for parsing and help texts.
    pub const ALL: [RequiredField; 4] = [
        RequiredField::Contact,
        RequiredField::Description,
        RequiredField::FreshnessSla,
        RequiredField::Tags,
    ];

    /// Name in rule ids, charters and the CLI.
    pub fn as_str(&self) -> &'static str {
        match self {
            RequiredField::Contact => "contact",
            RequiredField::Description => "description",
            RequiredField::FreshnessSla => "freshness-sla",
            RequiredField::Tags => "tags",
        }
    }

    /// Parses [`RequiredField::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == text)
    }

    fn fix(&self) -> &'static str {
        match self {
            RequiredField::Contact => "publish with --contact ADDRESS",
            RequiredField::Description => "publish with --description TEXT",
            RequiredField::FreshnessSla => "publish with --freshness-hours N",
            RequiredField::Tags => "publish with at least one --tag",
        }
    }
}

impl fmt::Display for RequiredField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most restricted tags, required fields or purposes in a policy set.
pub const MAX_POLICY_ITEMS: usize = 32;

/// The global policies of a mesh at one version. Founded by the charter (version 0), changed
/// only by amendments carried by the charter's decision rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    /// 0 for the charter's own; every carried amendment adds one.
    pub version: u32,
    /// Classification tags whose columns must be restricted (never granted), e.g. `pii`.
    pub restricted_tags: Vec<String>,
    /// Descriptor fields every product must fill.
    pub required_fields: Vec<RequiredField>,
    /// Longest contract any product may offer or any agreement may run, in days.
    pub max_contract_days: Option<u32>,
    /// The purposes contracts may state, mesh-wide; empty: any purpose.
    pub purposes: Vec<String>,
}

/// One rule of a policy set, for display: `governance show` and the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Stable id, e.g. `restricted-tag:pii`.
    pub id: String,
    /// What the rule asks, in a sentence.
    pub explanation: String,
}

/// A rule a product or contract breaks, and what to change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The rule's id.
    pub rule: String,
    /// What is wrong, naming the column, field or value.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule `{}`: {}; fix: {}",
            self.rule, self.problem, self.fix
        )
    }
}

impl Policies {
    /// Checks the sizes and names of a policy set before it is signed or applied.
    pub fn validate(&self) -> Result<(), BoundsError> {
        check_count(
            "the restricted tags",
            self.restricted_tags.len(),
            MAX_POLICY_ITEMS,
        )?;
        for tag in &self.restricted_tags {
            check_len("a restricted tag", tag, MAX_TAG_LEN)?;
        }
        check_count(
            "the required fields",
            self.required_fields.len(),
            MAX_POLICY_ITEMS,
        )?;
        check_count("the purpose vocabulary", self.purposes.len(), MAX_PURPOSES)?;
        for purpose in &self.purposes {
            check_len("a purpose", purpose, MAX_PURPOSE_LEN)?;
        }
        Ok(())
    }

    /// True when the tag names are well formed (`[a-z0-9-]`), checked when an operator writes
    /// a policy; peers only need [`Policies::validate`].
    pub fn tags_are_names(&self) -> bool {
        self.restricted_tags.len() <= MAX_TAGS
            && self
                .restricted_tags
                .iter()
                .all(|t| validate_name("tag", t).is_ok())
    }

    /// The rules of this set, in a stable order.
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules = Vec::new();
        for tag in &self.restricted_tags {
            rules.push(Rule {
                id: format!("restricted-tag:{tag}"),
                explanation: format!(
                    "columns classified `{tag}` must be restricted: no contract may grant them"
                ),
            });
        }
        for field in &self.required_fields {
            rules.push(Rule {
                id: format!("required:{field}"),
                explanation: format!("every product must give its {}", field_noun(*field)),
            });
        }
        if let Some(days) = self.max_contract_days {
            rules.push(Rule {
                id: "max-contract-days".into(),
                explanation: format!("no contract may run longer than {days} days"),
            });
        }
        if !self.purposes.is_empty() {
            rules.push(Rule {
                id: "purpose-vocabulary".into(),
                explanation: format!(
                    "contracts may state only these purposes: {}",
                    self.purposes.join(", ")
                ),
            });
        }
        rules
    }

    /// The rules `product` breaks. Empty: compliant. Linear in the product's size: columns
    /// are looked up by hash, not by scanning its lists.
    pub fn check_product(&self, product: &ProductDescriptor) -> Vec<Violation> {
        let mut out = Vec::new();
        if !self.restricted_tags.is_empty() {
            self.check_restricted_tags(product, &mut out);
        }
        for field in &self.required_fields {
            let missing = match field {
                RequiredField::Contact => product.stewardship.contact.trim().is_empty(),
                RequiredField::Description => product.description.trim().is_empty(),
                RequiredField::FreshnessSla => product.sla.freshness_hours == 0,
                RequiredField::Tags => product.tags.is_empty(),
            };
            if missing {
                out.push(Violation {
                    rule: format!("required:{field}"),
                    problem: format!("the product gives no {}", field_noun(*field)),
                    fix: field.fix().into(),
                });
            }
        }
        if let Some(max) = self.max_contract_days
            && product.policy.max_contract_days > max
        {
            out.push(Violation {
                rule: "max-contract-days".into(),
                problem: format!(
                    "the product offers contracts of up to {} days; the mesh allows {max}",
                    product.policy.max_contract_days
                ),
                fix: format!("publish with --max-days {max} or fewer"),
            });
        }
        if !self.purposes.is_empty() {
            for purpose in &product.policy.allowed_purposes {
                if !self.purposes.contains(purpose) {
                    out.push(Violation {
                        rule: "purpose-vocabulary".into(),
                        problem: format!(
                            "allowed purpose `{purpose}` is not in the mesh's vocabulary"
                        ),
                        fix: format!("use only: {}", self.purposes.join(", ")),
                    });
                }
            }
        }
        out
    }

    /// The `restricted-tag:*` violations of `product`, tag by tag in policy order, then
    /// column by column in schema order.
    fn check_restricted_tags(&self, product: &ProductDescriptor, out: &mut Vec<Violation>) {
        let restricted: HashSet<&str> = product
            .policy
            .restricted_columns
            .iter()
            .map(String::as_str)
            .collect();
        // The first entry of a column, as `Stewardship::tags_of` reads it.
        let mut tags: HashMap<&str, &[String]> = HashMap::new();
        for entry in &product.stewardship.column_tags {
            tags.entry(entry.column.as_str())
                .or_insert(entry.tags.as_slice());
        }
        for tag in &self.restricted_tags {
            for column in product.column_names() {
                let tagged = tags
                    .get(column)
                    .is_some_and(|tags| tags.iter().any(|t| t == tag));
                if tagged && !restricted.contains(column) {
                    out.push(Violation {
                        rule: format!("restricted-tag:{tag}"),
                        problem: format!(
                            "column `{column}` is classified `{tag}` but not restricted"
                        ),
                        fix: format!("publish with --restricted {column}"),
                    });
                }
            }
        }
    }

    /// The rules contract `terms` break: the mesh-wide caps on duration and purpose.
    pub fn check_terms(&self, terms: &ContractTerms) -> Vec<Violation> {
        let mut out = Vec::new();
        if let Some(max) = self.max_contract_days {
            let span = terms.valid_until_ms.saturating_sub(terms.valid_from_ms);
            if span > u64::from(max) * DAY_MS {
                out.push(Violation {
                    rule: "max-contract-days".into(),
                    problem: format!(
                        "the contract would run {} days; the mesh allows at most {max}",
                        span.div_ceil(DAY_MS)
                    ),
                    fix: format!("request --days {max} or fewer"),
                });
            }
        }
        if !self.purposes.is_empty() && !self.purposes.contains(&terms.purpose) {
            out.push(Violation {
                rule: "purpose-vocabulary".into(),
                problem: format!(
                    "purpose `{}` is not in the mesh's vocabulary",
                    terms.purpose
                ),
                fix: format!("state one of: {}", self.purposes.join(", ")),
            });
        }
        out
    }
}

fn field_noun(field: RequiredField) -> &'static str {
    match field {
        RequiredField::Contact => "owner contact",
        RequiredField::Description => "description",
        RequiredField::FreshnessSla => "freshness promise (hours)",
        RequiredField::Tags => "search tags",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::tests::terms;
    use crate::descriptor::tests::sample;
    use crate::identity::Identity;

    fn pii_rule() -> Policies {
        Policies {
            version: 1,
            restricted_tags: vec!["pii".into()],
            ..Policies::default()
        }
    }

    #[test]
    fn a_tagged_column_must_be_restricted() {
        let mut product = sample(&Identity::from_secret_bytes([1; 32]), "p", 1);
        // The sample restricts `email`, tagged `pii`: compliant.
        assert!(pii_rule().check_product(&product).is_empty());
        product.policy.restricted_columns.clear();
        let violations = pii_rule().check_product(&product);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].rule, "restricted-tag:pii");
        assert!(violations[0].problem.contains("`email`"));
        assert_eq!(violations[0].fix, "publish with --restricted email");
        // No policy, no violation.
        assert!(Policies::default().check_product(&product).is_empty());
    }

    #[test]
    fn the_widest_product_is_checked_quickly() {
        let mut product = crate::descriptor::tests::widest(&Identity::from_secret_bytes([1; 32]));
        let mut policies = Policies {
            restricted_tags: (0..MAX_POLICY_ITEMS).map(|i| format!("tag-{i}")).collect(),
            ..Policies::default()
        };
        policies.restricted_tags[MAX_POLICY_ITEMS - 1] = "pii".into();
        assert!(policies.validate().is_ok());
        let started = std::time::Instant::now();
        assert!(policies.check_product(&product).is_empty());
        let elapsed = started.elapsed();
        assert!(
            elapsed < crate::descriptor::tests::QUICK,
            "check_product took {elapsed:?}"
        );
        // The first column unrestricted: one violation, found as quickly.
        product.policy.restricted_columns.pop();
        let started = std::time::Instant::now();
        let violations = policies.check_product(&product);
        assert!(started.elapsed() < crate::descriptor::tests::QUICK);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].fix, "publish with --restricted c0");
    }

    #[test]
    fn required_fields_name_the_flag_that_fixes_them() {
        let mut product = sample(&Identity::from_secret_bytes([1; 32]), "p", 1);
        let policies = Policies {
            required_fields: RequiredField::ALL.to_vec(),
            ..Policies::default()
        };
        product.sla.freshness_hours = 24;
        assert!(policies.check_product(&product).is_empty());
        product.stewardship.contact.clear();
        product.description = "  ".into();
        product.sla.freshness_hours = 0;
        product.tags.clear();
        let rules: Vec<String> = policies
            .check_product(&product)
            .into_iter()
            .map(|v| v.rule)
            .collect();
        assert_eq!(
            rules,
            [
                "required:contact",
                "required:description",
                "required:freshness-sla",
                "required:tags"
            ]
        );
    }

    #[test]
    fn caps_apply_to_products_and_terms() {
        let policies = Policies {
            max_contract_days: Some(7),
            purposes: vec!["analytics".into()],
            ..Policies::default()
        };
        let mut product = sample(&Identity::from_secret_bytes([1; 32]), "p", 1);
        product.policy.allowed_purposes = vec!["marketing".into()];
        let rules: Vec<String> = policies
            .check_product(&product)
            .into_iter()
            .map(|v| v.rule)
            .collect();
        assert_eq!(rules, ["max-contract-days", "purpose-vocabulary"]);

        let mut t = terms();
        assert_eq!(policies.check_terms(&t).len(), 1, "30 days > 7");
        t.valid_until_ms = t.valid_from_ms + 7 * DAY_MS;
        assert!(policies.check_terms(&t).is_empty());
        t.purpose = "marketing".into();
        assert_eq!(policies.check_terms(&t)[0].rule, "purpose-vocabulary");
    }

    #[test]
    fn rules_are_listed_with_ids() {
        let policies = Policies {
            restricted_tags: vec!["pii".into()],
            required_fields: vec![RequiredField::Contact],
            max_contract_days: Some(365),
            purposes: vec![],
            version: 2,
        };
        let ids: Vec<String> = policies.rules().into_iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            [
                "restricted-tag:pii",
                "required:contact",
                "max-contract-days"
            ]
        );
        assert!(policies.validate().is_ok());
        let huge = Policies {
            restricted_tags: vec!["x".into(); MAX_POLICY_ITEMS + 1],
            ..Policies::default()
        };
        assert!(huge.validate().is_err());
    }
}
