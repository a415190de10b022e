//! Typed metric families: a Prometheus vector whose label values come from enums, with the
//! handle of every series created once, when the registry is built. Recording is an index into
//! a vector (no label hashing, no allocation), and a series exists at 0 from the first scrape.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::Registry;

/// A closed set of label values: each enum whose variants are the series of a label.
pub trait LabelValue: Copy + 'static {
    /// Every value, in the order of [`LabelValue::index`].
    const ALL: &'static [Self];
    /// The label value as exposed.
    fn label(self) -> &'static str;
    /// The position of `self` in [`LabelValue::ALL`].
    fn index(self) -> usize;
}

/// Implements [`LabelValue`] for a field-less enum whose `ALL` list is in declaration order,
/// with the given method giving the label.
macro_rules! label_value {
    ($ty:ty, $all:expr, $label:ident) => {
        impl $crate::metrics::family::LabelValue for $ty {
            const ALL: &'static [Self] = &$all;
            fn label(self) -> &'static str {
                self.$label()
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}
pub(crate) use label_value;

/// Declares a label enum of the metrics themselves: its variants and their label values, once.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $value:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: [$name; [$($value),+].len()] = [$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value),+
                }
            }
        }

        $crate::metrics::family::label_value!($name, $name::ALL, as_str);
    };
}
pub(crate) use label_enum;

/// Registers `collector` in `registry` and hands it back.
pub(crate) fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
    collector
}

/// A Prometheus vector (`IntCounterVec`, `HistogramVec`, ...) and the type of its series.
pub trait LabelledVec: Clone {
    type Series: Clone;
    fn series(&self, values: &[&str]) -> Self::Series;
}

impl<T: MetricVecBuilder> LabelledVec for MetricVec<T> {
    type Series = T::M;
    fn series(&self, values: &[&str]) -> T::M {
        self.with_label_values(values)
    }
}

/// A vector with one label, typed by `L`; the series of the values `keep` accepts exist from
/// the start.
pub struct Family<V: LabelledVec, L> {
    vec: V,
    /// Shared: cloning a family (every request clones the state) is one reference count.
    handles: Arc<[Option<V::Series>]>,
    label: PhantomData<L>,
}

impl<V: LabelledVec, L: LabelValue> Family<V, L> {
    pub(crate) fn new(vec: V, keep: impl Fn(L) -> bool) -> Self {
        let handles: Arc<[Option<V::Series>]> = L::ALL
            .iter()
            .map(|&l| keep(l).then(|| vec.series(&[l.label()])))
            .collect();
        Family {
            vec,
            handles,
            label: PhantomData,
        }
    }

    /// The series of `value` (created on first use when it was not declared up front).
    pub fn get(&self, value: L) -> Cow<'_, V::Series> {
        match self.handles.get(value.index()).and_then(Option::as_ref) {
            Some(m) => Cow::Borrowed(m),
            None => Cow::Owned(self.vec.series(&[value.label()])),
        }
    }
}

impl<V: LabelledVec, L> Clone for Family<V, L> {
    fn clone(&self) -> Self {
        Family {
            vec: self.vec.clone(),
            handles: self.handles.clone(),
            label: PhantomData,
        }
    }
}

/// A vector with two labels, typed by `A` and `B` (in that order of label names); the pairs
/// `keep` accepts exist from the start.
pub struct Family2<V: LabelledVec, A, B> {
    vec: V,
    /// Shared: cloning a family (every request clones the state) is one reference count.
    handles: Arc<[Option<V::Series>]>,
    labels: PhantomData<(A, B)>,
}

impl<V: LabelledVec, A: LabelValue, B: LabelValue> Family2<V, A, B> {
    pub(crate) fn new(vec: V, keep: impl Fn(A, B) -> bool) -> Self {
        let mut handles = Vec::with_capacity(A::ALL.len() * B::ALL.len());
        for &a in A::ALL {
            for &b in B::ALL {
                handles.push(keep(a, b).then(|| vec.series(&[a.label(), b.label()])));
            }
        }
        Family2 {
            vec,
            handles: handles.into(),
            labels: PhantomData,
        }
    }

    /// The series of `(a, b)` (created on first use when it was not declared up front).
    pub fn get(&self, a: A, b: B) -> Cow<'_, V::Series> {
        let index = a.index() * B::ALL.len() + b.index();
        match self.handles.get(index).and_then(Option::as_ref) {
            Some(m) => Cow::Borrowed(m),
            None => Cow::Owned(self.vec.series(&[a.label(), b.label()])),
        }
    }
}

impl<V: LabelledVec, A, B> Clone for Family2<V, A, B> {
    fn clone(&self) -> Self {
        Family2 {
            vec: self.vec.clone(),
            handles: self.handles.clone(),
            labels: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounterVec, Opts};

    label_enum!(
        /// A test label.
        Colour { Red => "red", Green => "green", Blue => "blue" }
    );

    #[test]
    fn declared_series_exist_at_zero_and_others_appear_when_used() {
        let registry = Registry::new();
        let vec = register(
            &registry,
            IntCounterVec::new(Opts::new("t_total", "t"), &["colour"]).unwrap(),
        );
        let family = Family::new(vec, |c| c != Colour::Blue);
        family.get(Colour::Green).inc();
        let series = |registry: &Registry| {
            registry.gather()[0]
                .get_metric()
                .iter()
                .map(|m| {
                    (
                        m.get_label()[0].value().to_string(),
                        m.get_counter().get_value(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            series(&registry),
            [("green".to_string(), 1.0), ("red".to_string(), 0.0)]
        );
        family.get(Colour::Blue).inc();
        assert_eq!(series(&registry).len(), 3);
        for (i, c) in Colour::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
