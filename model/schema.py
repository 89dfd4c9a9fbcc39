"""The Kaggle Rossmann schema: the columns of train.csv, store.csv and the model's input table."""

from __future__ import annotations

# Columns of Kaggle's train.csv and the pandas dtype each is read as.
TRAIN_DTYPES: dict[str, str] = {
    "Store": "int64",
    "DayOfWeek": "int64",
    "Date": "datetime64[ns]",
    "Sales": "int64",
    "Customers": "int64",
    "Open": "int64",
    "Promo": "int64",
    "StateHoliday": "object",
    "SchoolHoliday": "int64",
}

STORE_DTYPES: dict[str, str] = {
    "Store": "int64",
    "StoreType": "object",
    "Assortment": "object",
    "CompetitionDistance": "float64",
    "CompetitionOpenSinceMonth": "float64",
    "CompetitionOpenSinceYear": "float64",
    "Promo2": "int64",
    "Promo2SinceWeek": "float64",
    "Promo2SinceYear": "float64",
    "PromoInterval": "object",
}

# The model's input: Kaggle's test.csv minus Id. Store attributes are bundled with the model.
INPUT_COLUMNS: list[str] = ["Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday"]

STATE_HOLIDAYS = ("0", "a", "b", "c")
STORE_TYPES = ("a", "b", "c", "d")
ASSORTMENTS = ("a", "b", "c")
PROMO_INTERVALS = ("", "Jan,Apr,Jul,Oct", "Feb,May,Aug,Nov", "Mar,Jun,Sept,Dec")
