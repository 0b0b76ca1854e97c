package dmftest

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// Row counts of the DemoProject entities.
const (
	demoCustomers      = 12345
	demoVendors        = 800
	demoSalesLines     = 3000
	demoCountries      = 200
	demoCustomerGroups = 150
	demoVendorGroups   = 120
	demoSalesHeaders   = 300
	demoAddresses      = 500
)

var (
	demoOnce sync.Once
	demoEnts []Entity
)

// DemoProject returns the demo definition group's entities, the same bytes
// on every call and every machine, shaped as F&O exports them:
//
//   - "Customers V3" ("Customers V3.csv", CSV-Unicode, UTF-8 with BOM,
//     12,345 rows) with names holding commas, doubled quotes, line breaks
//     inside quotes, non-ASCII letters and empty fields;
//   - "Vendors V2" ("Vendors V2.csv", CSV-Unicode, UTF-16 LE with BOM,
//     800 rows, some names outside the Basic Multilingual Plane);
//   - "Sales order lines V2" ("Sales order lines V2.csv", CSV, pure ASCII,
//     so as code page 1252 writes it, 3,000 rows; its manifest field map
//     leaves out the last two fields alphabetically);
//   - "Country/regions" ("Countryregions.xlsx", EXCEL, 200 rows, sheet
//     "Countryregions", recorded in the manifest as "Countryregions$"): an
//     F&O workbook (FOWorkbook), every value a string such as
//     "2011-01-31 00:00:00" or "19.000000", some cells left out;
//   - "Customer groups" ("Customer groups.xml", XML-Element, 150 records
//     CUSTCUSTOMERGROUPENTITY, some fields left out, "&" and "<" in text);
//   - "Vendor groups" ("VENDVENDORGROUPENTITY.xml", a file name not derived
//     from the label, XML-Attribute, 120 records, some attributes left out);
//   - "Sales order headers V2" ("Sales order headers V2.csv", CSV-Unicode,
//     UTF-8 with BOM, 300 rows, DefaultRefreshType IncrementalPush);
//   - "Customer addresses" ("Customer addresses.csv", CSV, code page 1252
//     without BOM as F&O writes non-Unicode formats, 500 rows of
//     Western-European names and streets with é ü ß € à ç ñ, values holding
//     commas and quotes);
//   - "Payment terms" ("Payment terms.csv", a 0-byte file, no
//     DefaultRefreshType in the manifest);
//   - "Bank accounts" (listed in the manifest as "Bank accounts.csv", no
//     file in the package).
//
// The CSV files are comma-separated with CRLF line ends and a header row of
// upper-case field names; every row is unique by its first column. Every
// CSV entity with a header row lists its fields in the manifest's
// EntityMapList (Entity.Fields). The caller owns the returned slices.
func DemoProject() []Entity {
	demoOnce.Do(func() {
		demoEnts = []Entity{
			{Name: "Customers V3", File: "Customers V3.csv", SourceFormat: "CSV-Unicode",
				Data: append([]byte("\ufeff"), demoCustomersCSV()...), Fields: demoCustomerHeader},
			{Name: "Vendors V2", File: "Vendors V2.csv", SourceFormat: "CSV-Unicode",
				Data: utf16LE(string(demoVendorsCSV())), Fields: demoVendorHeader},
			// Pure ASCII, so its UTF-8 is also code page 1252 as F&O writes "CSV".
			{Name: "Sales order lines V2", File: "Sales order lines V2.csv", SourceFormat: "CSV",
				Data: demoSalesLinesCSV(), Fields: demoSalesLineHeader, OmitFields: 2},
			{Name: "Country/regions", SourceFormat: "EXCEL", Sheet: "Countryregions",
				Data: FOWorkbook("Countryregions", demoCountryRows())},
			{Name: "Customer groups", SourceFormat: "XML-Element",
				Data: XMLElementFile("CUSTCUSTOMERGROUPENTITY", demoCustomerGroupHeader, demoCustomerGroupRows())},
			{Name: "Vendor groups", File: "VENDVENDORGROUPENTITY.xml", SourceFormat: "XML-Attribute",
				Data: XMLAttributeFile("VENDVENDORGROUPENTITY", demoVendorGroupHeader, demoVendorGroupRows())},
			{Name: "Sales order headers V2", SourceFormat: "CSV-Unicode", RefreshType: IncrementalPush,
				Data: append([]byte("\ufeff"), demoSalesHeadersCSV()...), Fields: demoSalesHeaderHeader},
			{Name: "Customer addresses", SourceFormat: "CSV", Data: demoAddressesCSV(), Fields: demoAddressHeader},
			{Name: "Payment terms", SourceFormat: "CSV-Unicode", OmitRefreshType: true},
			{Name: "Bank accounts", SourceFormat: "CSV-Unicode", Absent: true},
		}
		for i, e := range demoEnts {
			demoEnts[i] = withDefaults(e)
		}
	})
	out := make([]Entity, len(demoEnts))
	for i, e := range demoEnts {
		e.Data = bytes.Clone(e.Data)
		out[i] = e
	}
	return out
}

// foTimeLayout is how F&O writes dates and times into its files.
const foTimeLayout = "2006-01-02 15:04:05"

func demoCountryRows() [][]string {
	rng := rand.New(rand.NewPCG(20240301, 11))
	zones := []string{"GMTPLUS0100_AMSTERDAM_BERLIN", "GMTMINUS0500_EASTERNTIME", "GMT_COORDINATEDUNIVERSALTIME", ""}
	rows := [][]string{{"COUNTRYREGIONID", "SHORTNAME", "ISOCODE", "TIMEZONE", "ISEUROPEANUNIONMEMBER", "VATRATE", "CREATEDDATETIME"}}
	for i := 1; i <= demoCountries; i++ {
		id := string(rune('A'+i/26%26)) + string(rune('A'+i%26)) + strconv.Itoa(i%10)
		name := "Country " + strconv.Itoa(i)
		if i%9 == 0 {
			name = "Région d'outre-mer " + strconv.Itoa(i)
		}
		iso := id[:2]
		if i%13 == 0 {
			iso = "" // left out of the sheet
		}
		eu := "No"
		if rng.IntN(4) == 0 {
			eu = "Yes"
		}
		rows = append(rows, []string{id, name, iso, zones[rng.IntN(len(zones))], eu,
			fmt.Sprintf("%d.000000", 5+rng.IntN(21)),
			demoStart.AddDate(0, 0, -i).Format(foTimeLayout)})
	}
	return rows
}

var demoCustomerGroupHeader = []string{"CUSTOMERGROUPID", "DESCRIPTION", "PAYMENTTERMID", "DEFAULTDIMENSIONDISPLAYVALUE", "ISSALESTAXINCLUDEDINPRICE"}

func demoCustomerGroupRows() [][]string {
	terms := []string{"Net10", "Net30", "Net45", "COD", ""}
	var rows [][]string
	for i := 1; i <= demoCustomerGroups; i++ {
		desc := "Customer group " + strconv.Itoa(i)
		switch {
		case i%7 == 0:
			desc = "Wholesale & retail <" + strconv.Itoa(i) + ">"
		case i%10 == 0:
			desc = "" // left out
		}
		dim := ""
		if i%3 == 0 {
			dim = "-" + strconv.Itoa(100+i%5) + "--"
		}
		incl := "No"
		if i%4 == 0 {
			incl = "Yes"
		}
		rows = append(rows, []string{fmt.Sprintf("CG%03d", i), desc, terms[i%len(terms)], dim, incl})
	}
	return rows
}

var demoVendorGroupHeader = []string{"VENDORGROUPID", "DESCRIPTION", "DEFAULTPAYMENTTERMNAME", "CLEARINGPERIODPAYMENTTERMNAME"}

func demoVendorGroupRows() [][]string {
	var rows [][]string
	for i := 1; i <= demoVendorGroups; i++ {
		desc := fmt.Sprintf("Vendors \"%d\" & partners", i)
		if i%11 == 0 {
			desc = ""
		}
		clearing := ""
		if i%2 == 0 {
			clearing = "Net" + strconv.Itoa(10*(1+i%6))
		}
		rows = append(rows, []string{fmt.Sprintf("VG%03d", i), desc, "Net30", clearing})
	}
	return rows
}

var demoSalesHeaderHeader = []string{"SALESORDERNUMBER", "ORDERINGCUSTOMERACCOUNTNUMBER", "SALESORDERSTATUS", "CURRENCYCODE",
	"TOTALDISCOUNTPERCENTAGE", "MODIFIEDDATETIME"}

func demoSalesHeadersCSV() []byte {
	rng := rand.New(rand.NewPCG(20240301, 13))
	statuses := []string{"Backorder", "Delivered", "Invoiced", "Canceled"}
	return writeCSV(demoSalesHeaderHeader, demoSalesHeaders, func(i int) []string {
		return []string{
			fmt.Sprintf("SO-%06d", i),
			fmt.Sprintf("%06d", 1+rng.IntN(demoCustomers)),
			statuses[rng.IntN(len(statuses))],
			"USD",
			fmt.Sprintf("%d.000000", rng.IntN(4)*5),
			demoStart.Add(time.Duration(i) * 41 * time.Minute).Format(foTimeLayout),
		}
	})
}

var demoStart = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)

const demoTimeLayout = "2006-01-02T15:04:05"

func writeCSV(header []string, rows int, row func(i int) []string) []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.UseCRLF = true
	_ = w.Write(header)
	for i := 1; i <= rows; i++ {
		_ = w.Write(row(i))
	}
	w.Flush()
	return b.Bytes()
}

var demoCustomerHeader = []string{"CUSTOMERACCOUNT", "ORGANIZATIONNAME", "CUSTOMERGROUPID", "CREDITLIMIT",
	"CREATEDDATETIME", "ADDRESSCITY", "ISONHOLD"}

func demoCustomersCSV() []byte {
	rng := rand.New(rand.NewPCG(20240301, 3))
	plain := []string{"Contoso Retail", "Fabrikam Supplies", "Adatum Corporation", "Litware Inc.", "Northwind Traders",
		"Tailspin Toys", "Wide World Importers", "Proseware", "Coho Winery", "Alpine Ski House"}
	foreign := []string{"Müller & Søn", "Ærø Fiskeri", "Café Lumière", "Łódź Trading", "東京商事", "Ñandú Textiles", "Größe GmbH"}
	cities := []string{"Seattle", "Redmond", "London", "København", "Zürich", "São Paulo", "", "New York, NY"}
	groups := []string{"10", "20", "30", "40", "INTERCO"}
	return writeCSV(demoCustomerHeader, demoCustomers, func(i int) []string {
		var name string
		switch {
		case i%17 == 0:
			name = ""
		case i%11 == 0:
			name = foreign[rng.IntN(len(foreign))] + " " + strconv.Itoa(i)
		case i%7 == 0:
			name = plain[rng.IntN(len(plain))] + ", Ltd. " + strconv.Itoa(i)
		case i%13 == 0:
			name = plain[rng.IntN(len(plain))] + ` "Premium" ` + strconv.Itoa(i)
		case i%29 == 0:
			name = plain[rng.IntN(len(plain))] + "\r\nWarehouse " + strconv.Itoa(i)
		default:
			name = plain[rng.IntN(len(plain))] + " " + strconv.Itoa(i)
		}
		credit := ""
		if i%23 != 0 {
			credit = fmt.Sprintf("%d.%02d", rng.IntN(100)*500, rng.IntN(4)*25)
		}
		onHold := "No"
		if rng.IntN(10) == 0 {
			onHold = "Yes"
		}
		return []string{
			fmt.Sprintf("%06d", i),
			name,
			groups[rng.IntN(len(groups))],
			credit,
			demoStart.Add(time.Duration(i) * 17 * time.Minute).Format(demoTimeLayout),
			cities[rng.IntN(len(cities))],
			onHold,
		}
	})
}

var demoVendorHeader = []string{"VENDORACCOUNTNUMBER", "VENDORORGANIZATIONNAME", "VENDORGROUPID", "CURRENCYCODE",
	"ADDRESSCOUNTRYREGIONID", "CREATEDDATETIME"}

func demoVendorsCSV() []byte {
	rng := rand.New(rand.NewPCG(20240301, 5))
	names := []string{"Trey Research", "Lucerne Publishing", "Graphic Design Institute", "Humongous Insurance",
		"Blue Yonder Airlines", "Fourth Coffee", "Nordisk Ølbryggeri", "Żabka Hurt", "Logistik 🚚 Express"}
	currencies := []string{"USD", "EUR", "GBP", "DKK", "PLN", "JPY"}
	countries := []string{"USA", "DEU", "GBR", "DNK", "POL", "JPN"}
	return writeCSV(demoVendorHeader, demoVendors, func(i int) []string {
		name := names[rng.IntN(len(names))] + " " + strconv.Itoa(i)
		if i%9 == 0 {
			name = names[rng.IntN(len(names))] + ", Inc. " + strconv.Itoa(i)
		}
		c := rng.IntN(len(currencies))
		group := fmt.Sprintf("V%02d", 10*(1+rng.IntN(5)))
		if i%31 == 0 {
			group = ""
		}
		return []string{
			fmt.Sprintf("V%05d", i),
			name,
			group,
			currencies[c],
			countries[c],
			demoStart.Add(time.Duration(i) * 3 * time.Hour).Format(demoTimeLayout),
		}
	})
}

var demoSalesLineHeader = []string{"INVENTORYLOTID", "SALESORDERNUMBER", "LINENUMBER", "ITEMNUMBER",
	"ORDEREDSALESQUANTITY", "SALESPRICE", "LINEAMOUNT", "SALESUNITSYMBOL", "REQUESTEDRECEIPTDATE", "LINEDESCRIPTION"}

func demoSalesLinesCSV() []byte {
	rng := rand.New(rand.NewPCG(20240301, 7))
	items := []string{"A0001", "A0002", "D0003", "M0010", "P0111", "T0004"}
	units := []string{"ea", "pcs", "kg", "box"}
	return writeCSV(demoSalesLineHeader, demoSalesLines, func(i int) []string {
		qty := 1 + rng.IntN(50)
		cents := 100 + rng.IntN(99900)
		desc := ""
		if i%5 == 0 {
			desc = "Gift wrap, deliver to \"back door\""
		}
		return []string{
			fmt.Sprintf("LOT-%07d", i),
			fmt.Sprintf("SO-%06d", 1+(i-1)/4),
			strconv.Itoa(1 + (i-1)%4),
			items[rng.IntN(len(items))],
			strconv.Itoa(qty),
			fmt.Sprintf("%d.%02d", cents/100, cents%100),
			fmt.Sprintf("%d.%02d", qty*cents/100, qty*cents%100),
			units[rng.IntN(len(units))],
			demoStart.AddDate(0, 0, i%90).Format(demoTimeLayout),
			desc,
		}
	})
}

// DemoRowCounts returns the number of data rows (records, for XML) of each
// entity of DemoProject, by entity name: what a consumer must receive in
// all. The 0-byte and the absent entity have 0.
func DemoRowCounts() map[string]int {
	return map[string]int{
		"Customers V3":           csvRows(demoCustomersCSV()),
		"Vendors V2":             csvRows(demoVendorsCSV()),
		"Sales order lines V2":   csvRows(demoSalesLinesCSV()),
		"Country/regions":        len(demoCountryRows()) - 1, // after the header row
		"Customer groups":        len(demoCustomerGroupRows()),
		"Vendor groups":          len(demoVendorGroupRows()),
		"Sales order headers V2": csvRows(demoSalesHeadersCSV()),
		"Customer addresses":     len(demoAddressRows()),
		"Payment terms":          0,
		"Bank accounts":          0,
	}
}

// csvRows counts the records after the header of a demo CSV file.
func csvRows(data []byte) int {
	recs, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil || len(recs) == 0 {
		panic("dmftest: demo CSV does not parse: " + fmt.Sprint(err))
	}
	return len(recs) - 1
}

var demoAddressHeader = []string{"ADDRESSID", "CUSTOMERACCOUNT", "NAME", "STREET", "ZIPCODE", "CITY",
	"COUNTRYREGIONID", "DELIVERYNOTE"}

func demoAddressRows() [][]string {
	rng := rand.New(rand.NewPCG(20240301, 17))
	names := []string{"Hélène Dubois", "Jürgen Weiß", "François Lefèvre", "Núria Muñoz", "Joaquín Peña",
		"Çelik Ltd., Zürich", "Søren Ærø", "Anaïs Noël", "Björn Öström", "Brasserie à l'Étoile"}
	streets := []string{"Rue de la Gare", "Königstraße", "Calle Mayor", "Avenida São João", "Plaça de Catalunya",
		"Große Bleiche", "Place Vendôme", "Strandvejen", "Via dell'Università"}
	cities := []string{"Paris", "München", "Málaga", "Köln", "Besançon", "Genève", "A Coruña", "Kraków", "Saint-Étienne"}
	countries := []string{"FRA", "DEU", "ESP", "DEU", "FRA", "CHE", "ESP", "POL", "FRA"}
	notes := []string{"", "Livraison à domicile", "Lieferung ab 50 € frei", "Entrega en mañana", `Klingel "Weiß" drücken`, "Façade côté cour"}
	var rows [][]string
	for i := 1; i <= demoAddresses; i++ {
		c := rng.IntN(len(cities))
		rows = append(rows, []string{
			fmt.Sprintf("ADDR-%05d", i),
			fmt.Sprintf("%06d", 1+rng.IntN(demoCustomers)),
			names[rng.IntN(len(names))],
			fmt.Sprintf("%s %d", streets[rng.IntN(len(streets))], 1+rng.IntN(120)),
			fmt.Sprintf("%05d", 1000+rng.IntN(98000)),
			cities[c],
			countries[c],
			notes[rng.IntN(len(notes))],
		})
	}
	return rows
}

// demoAddressesCSV is "Customer addresses" as F&O writes a non-Unicode CSV
// format: code page 1252, no BOM.
func demoAddressesCSV() []byte {
	b, err := TextFile(TextFormat{CodePage: 1252}, demoAddressHeader, demoAddressRows())
	if err != nil {
		panic("dmftest: demo addresses: " + err.Error())
	}
	return b
}
